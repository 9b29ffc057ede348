"""Named adapters on one model, as PEFT offers them: add several, switch, disable, delete.

The active adapter's factors live in ``model.params`` under PEFT's names (``<module>.lora_A.weight``
/ ``.lora_B.weight``), so the flat dict stays the state dict and the forward/backward need no
change; ``model.adapters.modules`` / ``model.adapters.config`` / ``model.adapters.active`` describe it. The others
wait in ``model.adapters.inactive`` as StoredAdapter (config, per-module settings, factors), and
``set_adapter`` moves factors between the two (no copies). As in PEFT, an adapter added while
another is active is stored, not activated. ``disable_adapters`` / ``adapters_disabled()`` make
every adapted linear take its plain path, so the model computes the base exactly. Operations that
would mix a merged update with another adapter (switch, disable, delete while merged) are refused.
Everything is re-exported from minilora.adapters.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from minilora.errors import MiniLoraError, MiniLoraStateError


@dataclass
class StoredAdapter:
    """An inactive named adapter: its config, per-module settings and factors (outside model.params)."""
    config: object      # adapters.LoraConfig
    lora: dict          # module name -> LoraModule
    factors: dict       # '<module>.lora_A.weight' / '.lora_B.weight' -> array


def adapter_names(model) -> list:
    """Every adapter on the model: the active one first, then the inactive ones in insertion order."""
    return ([model.adapters.active] if model.adapters.active is not None else []) + list(model.adapters.inactive)


def install_adapter(model, name: str, config, lora: dict, factors: dict):
    """Put a ready adapter on the model: active if none is, else stored inactive (as PEFT does)."""
    if not isinstance(name, str) or not name or "." in name:
        raise MiniLoraError(f"adapter name must be a non-empty string without dots, got {name!r}")
    if name in adapter_names(model):
        raise MiniLoraError(f"the model already has an adapter named {name!r}; remove it first "
                            f"(delete_adapter / remove_lora) or choose another adapter_name")
    if model.adapters.active is None:
        if model.adapters.merged:
            raise MiniLoraStateError("cannot add adapters while adapters are merged; unmerge first")
        model.params.update(factors)
        model.adapters.modules, model.adapters.config, model.adapters.active = lora, config, name
        model.trainable = set(factors)
    else:
        model.adapters.inactive[name] = StoredAdapter(config, lora, factors)


def get_adapter(model, name: str) -> StoredAdapter:
    """A named adapter's config, modules and factors (the active one's factors are model.params' arrays)."""
    if name == model.adapters.active:
        ad = model.adapters
        return StoredAdapter(ad.config, ad.modules, {n: model.params[n] for n in ad.param_names()})
    if name not in model.adapters.inactive:
        raise MiniLoraError(f"no adapter named {name!r}; the model has {adapter_names(model) or 'none'}")
    return model.adapters.inactive[name]


def set_adapter(model, name: str):
    """Make adapter `name` the active one: its factors move into params and become trainable."""
    if name == model.adapters.active:
        return
    if name not in model.adapters.inactive:
        raise MiniLoraError(f"no adapter named {name!r}; the model has {adapter_names(model) or 'none'}")
    if model.adapters.merged:
        raise MiniLoraStateError(f"cannot switch to adapter {name!r} while {model.adapters.active!r} is merged; "
                            "unmerge first")
    old_names = model.adapters.param_names()
    if model.adapters.active is not None:
        model.adapters.inactive[model.adapters.active] = StoredAdapter(
            model.adapters.config, model.adapters.modules, {n: model.params.pop(n) for n in sorted(old_names)})
    new = model.adapters.inactive.pop(name)
    model.params.update(new.factors)
    model.adapters.modules, model.adapters.config, model.adapters.active = new.lora, new.config, name
    model.trainable = (model.trainable - old_names) | set(new.factors)


def delete_adapter(model, name: str):
    """Remove one named adapter (the active one too: the model then has no active adapter)."""
    if name == model.adapters.active:
        if model.adapters.merged:
            raise MiniLoraStateError(f"cannot delete adapter {name!r} while it is merged; unmerge first")
        for n in model.adapters.param_names():
            model.params.pop(n, None)
        model.trainable -= model.adapters.param_names()
        model.adapters.modules, model.adapters.config, model.adapters.active = {}, None, None
    elif name in model.adapters.inactive:
        del model.adapters.inactive[name]
    else:
        raise MiniLoraError(f"no adapter named {name!r}; the model has {adapter_names(model) or 'none'}")


def disable_adapters(model):
    """Compute the base model exactly (every adapted linear takes its plain path); refused while merged."""
    if model.adapters.merged:
        raise MiniLoraStateError("cannot disable a merged adapter (its update is inside the weights); unmerge first")
    model.adapters.enabled = False


def enable_adapters(model):
    """Undo disable_adapters: the active adapter's LoRA path is used again."""
    model.adapters.enabled = True


@contextmanager
def adapters_disabled(model):
    """`with adapters_disabled(model):` the base model (PEFT's `with model.disable_adapter():`)."""
    was = model.adapters.enabled
    disable_adapters(model)
    try:
        yield model
    finally:
        model.adapters.enabled = was
