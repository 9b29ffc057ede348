"""LlamaConfig: the model's configuration with Hugging Face's field names.

Shapes come from param_calc.shapes, the one table the calculator counts from too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from param_calc.shapes import llama_head_dim, llama_linear_modules, llama_param_shapes


@dataclass
class LlamaConfig:
    vocab_size: int = 259                 # byte tokenizer: 256 bytes + bos, eos, pad
    hidden_size: int = 64                 # model width d
    intermediate_size: int = 172          # SwiGLU hidden width
    num_hidden_layers: int = 2            # decoder layers L
    num_attention_heads: int = 4          # query heads
    num_key_value_heads: int = 2          # key/value heads (GQA); divides num_attention_heads
    max_position_embeddings: int = 256    # longest sequence RoPE tables cover
    rope_theta: float = 10000.0           # RoPE base
    rms_norm_eps: float = 1e-5            # eps inside the RMSNorm square root
    tie_word_embeddings: bool = False     # lm_head shares embed_tokens.weight
    head_dim: int | None = None           # None: hidden_size // num_attention_heads
    rope_scaling: dict | None = None      # e.g. {"rope_type": "llama3", "factor": 8.0, ...}
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict, repr=False)  # other config.json keys, kept on save

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = llama_head_dim(self)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})")

    def param_shapes(self) -> dict:
        """{state-dict name: shape} for every parameter (param_calc.shapes.llama_param_shapes)."""
        return llama_param_shapes(self)

    def num_parameters(self) -> int:
        """The number of parameter values, computed from one and two layers (no per-layer listing,
        so a config with 10**7 layers is sized at once, before anything is allocated)."""
        from dataclasses import replace

        def count(layers):
            return sum(math.prod(s) for s in replace(self, num_hidden_layers=layers).param_shapes().values())

        one = count(1)
        return one + (self.num_hidden_layers - 1) * (count(2) - one)

    def linear_modules(self) -> dict:
        """{module name: (in, out)} for every linear, lm_head included."""
        return llama_linear_modules(self)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})
