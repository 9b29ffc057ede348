"""param_calc: exact LoRA parameter counts for real architectures (pure Python, no numpy)."""
