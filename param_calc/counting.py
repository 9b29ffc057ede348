"""LoRA parameter counts exactly as PEFT makes them.

Rules (PEFT's LoraModel, checked against PEFT 0.21 in tests/test_param_calc_peft_oracle.py):

- Each adapted module gets A (r, in) and B (out, r): r * (in + out) parameters; an embedding
  gets lora_embedding_A (r, num_embeddings) and lora_embedding_B (dim, r), the same sum.
  DoRA adds a magnitude vector of out_features.
- A list of target names matches a module whose full path equals a name or ends with "." + name,
  so "c_proj" on GPT-2 adapts both attn.c_proj and mlp.c_proj. A single string that is not
  "all-linear" is a regular expression that must match the whole path.
- "all-linear" is every nn.Linear / Conv1D except the output head.
- rank_pattern {key: r}: the first key (in order) for which re.match(rf"(.*\\.)?({key})$", path)
  succeeds sets the module's rank; otherwise the path itself is looked up, then the global r.
- exclude_modules removes matches with the same list / regex rules.
- PEFT's "all params" is base + LoRA (a tied head counted once); trainable % = 100 * LoRA / all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from param_calc.architectures import Architecture, Module
from param_calc.errors import ParamCalcError

ALL_LINEAR = "all-linear"
DEFAULT = "default"


def name_matches(path: str, targets) -> bool:
    """PEFT's target test: a regex str must fullmatch; a list matches by equality or '.'-suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return path in targets or any(path.endswith("." + t) for t in targets)


def pattern_key(keys, path: str) -> str:
    """PEFT's get_pattern_key: the first key whose regex matches the end of path, else path."""
    for key in keys:
        if re.match(rf"(.*\.)?({key})$", path):
            return key
    return path


def _parse_targets(targets):
    """None/'default', 'all-linear', a regex str, or a list of names -> (kind, value)."""
    if targets is None:
        return DEFAULT, None
    if isinstance(targets, str):
        if targets.lower() == ALL_LINEAR:
            return ALL_LINEAR, None
        if targets.lower() == DEFAULT:
            return DEFAULT, None
        try:
            re.compile(targets)
        except re.error as e:
            raise ParamCalcError(f"bad target regex {targets!r}: {e}") from None
        return "regex", targets
    names = [t.strip() for t in targets]
    if not names or any(not t for t in names):
        raise ParamCalcError("empty target name in the target list")
    if any(t.lower() == ALL_LINEAR for t in names):
        if len(names) > 1:
            raise ParamCalcError("'all-linear' cannot be combined with other target names")
        return ALL_LINEAR, None
    return "names", names


def _known_names(arch: Architecture) -> str:
    return ", ".join(dict.fromkeys(m.group.rsplit(".", 1)[-1] for m in arch.modules))


def select_modules(arch: Architecture, targets=None, exclude=None) -> list:
    """The modules PEFT would adapt for these targets, in model order. ParamCalcError if a target
    name matches nothing adaptable (PEFT would ignore it or fail on a non-linear module)."""
    kind, value = _parse_targets(targets)
    if kind == DEFAULT:
        kind, value = "names", list(arch.default_targets)
    if kind == ALL_LINEAR:
        chosen = [m for m in arch.modules if m.kind != "embedding" and m.name != arch.output_head]
    elif kind == "regex":
        chosen = [m for m in arch.modules if name_matches(m.name, value)]
        if not chosen:
            raise ParamCalcError(f"target regex {value!r} matches no linear or embedding module of "
                                 f"{arch.name} (module names: {_known_names(arch)})")
    else:
        for t in value:
            if not any(name_matches(m.name, [t]) for m in arch.modules):
                raise ParamCalcError(f"unknown target {t!r}: it matches no linear or embedding module of "
                                     f"{arch.name} (module names: {_known_names(arch)})")
        chosen = [m for m in arch.modules if name_matches(m.name, value)]
    if exclude:
        ex = exclude if isinstance(exclude, str) else [e.strip() for e in exclude]
        chosen = [m for m in chosen if not name_matches(m.name, ex)]
        if not chosen:
            raise ParamCalcError("exclude removes every targeted module")
    return chosen


def rank_for(path: str, rank: int, rank_pattern: dict | None) -> int:
    """The rank PEFT gives the module at path."""
    if not rank_pattern:
        return rank
    return rank_pattern.get(pattern_key(rank_pattern.keys(), path), rank)


def _check_rank(r, what="rank"):
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ParamCalcError(f"{what} must be a positive integer, got {r!r}")


@dataclass(frozen=True)
class Adapted:
    """One adapted module and its rank."""
    module: Module
    rank: int
    dora: bool = False

    @property
    def params(self) -> int:
        """r * (in + out), plus out_features for a DoRA magnitude vector."""
        m = self.module
        return self.rank * (m.fan_in + m.fan_out) + (m.fan_out if self.dora else 0)


@dataclass(frozen=True)
class LoraCount:
    """A LoRA configuration counted on an architecture."""
    arch: Architecture
    rank: int
    targets: object                 # as given: None, "all-linear", a regex, or a list of names
    adapted: tuple                  # Adapted, in model order
    rank_pattern: dict = field(default_factory=dict)
    dora: bool = False

    @property
    def base_params(self) -> int:
        return self.arch.base_params

    @property
    def lora_params(self) -> int:
        return sum(a.params for a in self.adapted)

    @property
    def peft_all_params(self) -> int:
        """What PEFT's get_nb_trainable_parameters() returns second: base + LoRA."""
        return self.base_params + self.lora_params

    @property
    def ratio(self) -> float:
        """Base parameters per LoRA parameter (the seed's 'reduction factor')."""
        return self.base_params / self.lora_params

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.lora_params / self.peft_all_params

    def rows(self) -> list:
        """Per-module table rows, one per (group, in, out, rank), in model order."""
        rows = {}
        for a in self.adapted:
            m = a.module
            key = (m.group, m.fan_in, m.fan_out, a.rank)
            if key not in rows:
                rows[key] = {"module": m.group, "kind": m.kind, "in": m.fan_in, "out": m.fan_out,
                             "rank": a.rank, "count": 0, "params_per_module": a.params, "total": 0}
            rows[key]["count"] += 1
            rows[key]["total"] += a.params
        return list(rows.values())


def max_rank(arch: Architecture, targets=None, exclude=None) -> int:
    """The largest rank every module the targets select can take: min(in, out) over them."""
    return min(min(m.fan_in, m.fan_out) for m in select_modules(arch, targets, exclude))


def count_lora(arch: Architecture, rank: int = 8, targets=None, rank_pattern: dict | None = None,
               exclude=None, dora: bool = False) -> LoraCount:
    """Count LoRA on arch as PEFT would for LoraConfig(r=rank, target_modules=targets, ...).

    targets: None (PEFT's default for the model type), "all-linear", a regex string, or a list of
    names. rank_pattern: {key: rank} overrides. Returns a LoraCount; ParamCalcError on bad input.
    """
    _check_rank(rank)
    rank_pattern = dict(rank_pattern or {})
    for key, r in rank_pattern.items():
        _check_rank(r, f"rank for {key!r}")
        try:
            re.compile(key)
        except re.error as e:
            raise ParamCalcError(f"bad rank pattern key {key!r}: {e}") from None
    chosen = select_modules(arch, targets, exclude)
    adapted = tuple(Adapted(m, rank_for(m.name, rank, rank_pattern), dora) for m in chosen)
    for a in adapted:                          # as minilora's add_lora: B @ A cannot have a higher rank
        if a.rank > min(a.module.fan_in, a.module.fan_out):
            raise ParamCalcError(f"rank {a.rank} exceeds min(in, out) = {min(a.module.fan_in, a.module.fan_out)} "
                                 f"for {a.module.name} ({a.module.fan_in} -> {a.module.fan_out}); minilora "
                                 "refuses it (PEFT allows it, but the update's rank cannot exceed that)")
    return LoraCount(arch=arch, rank=rank, targets=targets, adapted=adapted, rank_pattern=rank_pattern,
                     dora=dora)
