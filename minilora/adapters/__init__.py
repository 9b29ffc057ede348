"""LoRA adapters on a model, by PEFT's rules: config and target matching, add/merge/unmerge/remove,
several named adapters (switch, disable, delete) and weighted combinations.

The adapter state of a model (``model.adapters``, an AdapterState) is changed only through these
functions."""
from minilora.adapters.lora import (
    LoraConfig,
    add_lora,
    check_lora_hparams,
    format_trainable,
    lora_param_count,
    match_targets,
    merge_lora,
    pattern_value,
    plan_lora,
    remove_lora,
    trainable_summary,
    unmerge_lora,
)
from minilora.adapters.named import (
    StoredAdapter,
    adapter_names,
    adapters_disabled,
    delete_adapter,
    disable_adapters,
    enable_adapters,
    get_adapter,
    install_adapter,
    set_adapter,
)
from minilora.adapters.weighted import add_weighted_adapter

__all__ = ["LoraConfig", "add_lora", "check_lora_hparams", "format_trainable", "lora_param_count",
           "match_targets", "merge_lora", "pattern_value", "plan_lora", "remove_lora", "trainable_summary",
           "unmerge_lora", "StoredAdapter", "adapter_names", "adapters_disabled", "delete_adapter",
           "disable_adapters", "enable_adapters", "get_adapter", "install_adapter", "set_adapter",
           "add_weighted_adapter"]
