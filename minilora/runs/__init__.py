"""Runs: FinLoRA run configs (the one parser, shared with param_calc), recipes, the demos.

Modules are imported directly (``minilora.runs.finlora`` is pure Python: param-calc uses it)."""
