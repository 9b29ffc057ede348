"""A Llama-architecture decoder (transformers' LlamaForCausalLM semantics) over a flat parameter dict.

Per decoder layer, with x (B, T, C):
    a = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm(x)
    y = a + down_proj(silu(gate_proj(n2)) * up_proj(n2)),                        n2 = rmsnorm(a)
logits = lm_head(rmsnorm(x_L)); the causal-LM loss shifts labels inside (position t predicts
labels[t + 1]) and averages over the labels that are not -100, as transformers does. The layer's
forward and backward live in minilora.decoder (DecoderLayer, a base class); in training the head
and the loss run fused, in row chunks, over the counted positions only (layers.loss.head_cross_entropy).

Parameters live in ``model.params`` keyed by Hugging Face state-dict names; LoRA factors by PEFT's
(``model.layers.0.self_attn.q_proj.lora_A.weight``). ``model.trainable`` names the parameters that
get gradients; every other weight is frozen and its gradient is never computed.
The LoRA state has one owner, ``model.adapters`` (an AdapterState), changed only through the
functions of minilora.adapters (add, merge, unmerge, set/disable/delete). Only the active adapter's
factors are in ``model.params``; the others wait in ``model.adapters.inactive`` and set_adapter
swaps them in. After the first forward, the q/k/v (and gate/up) weights in ``model.params`` are row
views of one stacked array per layer (minilora.projections explains the rules).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from minilora.backend import array_module, asarray, check_allocation, get_xp
from minilora.config import LlamaConfig
from minilora.decoder import DecoderLayer, LayerCheckpoint
from minilora.errors import MiniLoraError, MiniLoraStateError
from minilora.layers.embedding import embedding_backward, embedding_forward
from minilora.layers.linear import linear_forward
from minilora.layers.loss import head_cross_entropy
from minilora.layers.rmsnorm import rmsnorm_forward
from minilora.layers.rope import rope_tables
from minilora.projections import accumulate

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass
class LoraModule:
    """The LoRA settings of one adapted linear (its A and B live in model.params)."""
    r: int
    alpha: float
    scale: float          # alpha / r, or alpha / sqrt(r) with rsLoRA
    dropout: float


@dataclass
class AdapterState:
    """The LoRA state of one model; only minilora.adapters' functions change it."""
    modules: dict = field(default_factory=dict)   # module name -> LoraModule, of the active adapter
    config: object = None                         # the active adapter's LoraConfig
    active: str | None = None                     # name of the adapter whose factors are in params
    inactive: dict = field(default_factory=dict)  # name -> adapters.StoredAdapter (factors outside params)
    merged: bool = False                          # the active update is folded into the base weights
    enabled: bool = True                          # False: the adapted model computes the base exactly

    def param_names(self) -> set:
        """The LoRA parameter names of the active adapter (PEFT's '<module>.lora_A.weight', ...)."""
        return {f"{m}.lora_{ab}.weight" for m in self.modules for ab in "AB"}


class LlamaForCausalLM(DecoderLayer):
    """config + a flat dict of parameters + which of them train + the LoRA state (``adapters``)."""

    def __init__(self, config: LlamaConfig, params: dict, seed: int = 0):
        self.config = config
        self.params = params
        self.xp = array_module(*params.values())
        self.trainable: set = set()          # names that get gradients
        self.adapters = AdapterState()       # the LoRA state (minilora.adapters changes it)
        self.quantized: dict = {}            # weight name -> stored weight (minilora.quant.formats; frozen only)
        self._stacked: dict = {}             # group names -> (stacked weight, its row views in params)
        self.gradient_checkpointing = False  # training keeps each layer's input only, recomputes the rest
        self.seed = seed
        self.rng = self.xp.random.default_rng(seed)   # LoRA dropout masks
        self._rope = {}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def init(cls, config: LlamaConfig, seed: int = 0, xp=None, dtype="float32",
             initializer_range: float = 0.02):
        """Random weights as transformers initialises them: N(0, 0.02^2) matrices, ones for norms.

        The draws come from a host NumPy generator and are then placed on xp, so a seed gives
        the same weights on every backend (NumPy and CuPy runs can be compared).
        """
        xp = get_xp("numpy") if xp is None else xp
        n = config.num_parameters()                      # sized before anything is allocated
        check_allocation(n * get_xp("numpy").dtype(dtype).itemsize, f"a model of {n:,} parameters", xp)
        rng = get_xp("numpy").random.default_rng(seed)
        params = {}
        for name, shape in config.param_shapes().items():
            if name.endswith("norm.weight"):
                params[name] = xp.ones(shape, dtype=dtype)
            elif name.endswith(".bias"):
                params[name] = xp.zeros(shape, dtype=dtype)
            else:
                params[name] = asarray((rng.standard_normal(shape) * initializer_range).astype(dtype), xp)
        return cls(config, params, seed=seed)

    def to(self, xp_or_name, seed: int | None = None):
        """Move every array (base, quantized base, active and stored adapters) to another backend.

        `xp_or_name` is an array module or 'numpy' / 'cupy'. The LoRA-dropout generator is
        re-seeded on the new backend (a NumPy generator's state cannot become a CuPy one).
        Optimizer moments are created beside the parameters, so an optimizer made after the move
        lives on the device too. Returns self.
        """
        xp = get_xp(xp_or_name) if isinstance(xp_or_name, str) else xp_or_name
        self.params = {k: asarray(v, xp) for k, v in self.params.items()}
        from minilora.quant import to_backend

        self.quantized = {k: to_backend(qt, xp) for k, qt in self.quantized.items()}
        for stored in self.adapters.inactive.values():
            stored.factors = {k: asarray(v, xp) for k, v in stored.factors.items()}
        self.xp = xp
        self._stacked = {}
        self.rng = xp.random.default_rng(self.seed if seed is None else seed)
        self._rope = {}
        return self

    @property
    def dtype(self):
        return self.params["model.embed_tokens.weight"].dtype

    def head_weight_name(self) -> str:
        return "model.embed_tokens.weight" if self.config.tie_word_embeddings else "lm_head.weight"

    def weight(self, name: str):
        """A base weight as an array of the model's dtype (dequantized if stored quantized, in any format)."""
        if name in self.quantized:
            from minilora.quant import dequantize

            return dequantize(self.quantized[name], dtype=self.dtype)
        return self.params[name]

    def rope(self, positions_or_len):
        """(cos, sin) tables for positions 0..T-1 (cached per length) or for explicit positions."""
        c = self.config
        if isinstance(positions_or_len, int):
            if positions_or_len not in self._rope:
                self._rope[positions_or_len] = rope_tables(
                    positions_or_len, c.head_dim, c.rope_theta, self.xp, self.dtype, c.rope_scaling)
            return self._rope[positions_or_len]
        return rope_tables(positions_or_len, c.head_dim, c.rope_theta, self.xp, self.dtype, c.rope_scaling)

    # ---- forward and backward (layer_forward and its backward: minilora.decoder) -------------
    def hidden_states(self, input_ids, train: bool = False, keep: bool = False):
        """Final normalised hidden states (B, T, C), and the caches when keep=True."""
        ids = self.xp.asarray(input_ids)
        if ids.ndim != 2 or 0 in ids.shape:
            raise MiniLoraError(f"input_ids must be a (batch, seq_len) array with batch, seq_len >= 1, "
                                f"got shape {tuple(ids.shape)}")
        x, c_emb = embedding_forward(ids, self.params["model.embed_tokens.weight"])  # (B, T, C)
        cos, sin = self.rope(ids.shape[1])
        caches = []
        ckpt = keep and self.gradient_checkpointing
        for i in range(self.config.num_hidden_layers):
            rng = copy.deepcopy(self.rng) if ckpt and train and self._dropout() else None
            x_in = x
            x, cache = self.layer_forward(x, i, cos, sin, train)
            if keep:                         # checkpointing: the layer's input (and dropout's rng)
                caches.append(LayerCheckpoint(x_in, rng, train) if ckpt else cache)
        h, c_norm = rmsnorm_forward(x, self.params["model.norm.weight"], self.config.rms_norm_eps)
        return h, (c_emb, caches, c_norm)

    def forward(self, input_ids):
        """Logits (B, T, V) for integer input_ids (B, T); inference (no dropout, no caches kept)."""
        h, _ = self.hidden_states(input_ids)
        return linear_forward(h, self.weight(self.head_weight_name()))[0]

    __call__ = forward

    def shifted_targets(self, labels):
        """(B, T) targets for the hidden states: position t predicts labels[t + 1]; the last predicts nothing."""
        labels = self.xp.asarray(labels)
        if labels.ndim != 2:
            raise MiniLoraError(f"labels must be a (batch, seq_len) array, got shape {tuple(labels.shape)}")
        t = self.xp.full(labels.shape, -100, dtype="int64" if labels.dtype.kind == "u" else labels.dtype)
        t[:, :-1] = labels[:, 1:]
        return t

    def loss(self, input_ids, labels):
        """The causal-LM loss (a 0-d array) without gradients."""
        h, _ = self.hidden_states(input_ids)
        return head_cross_entropy(h, self.weight(self.head_weight_name()), self.shifted_targets(labels),
                                  grad=False)[0]

    def loss_and_grads(self, input_ids, labels, train: bool = True):
        """(loss, grads): the causal-LM loss and {name: gradient} for the trainable names only.

        input_ids, labels (B, T) integers; labels are aligned with input_ids (shifted inside)
        and -100 marks positions that do not count. train=True applies LoRA dropout. Only the
        counted positions go through lm_head, in row chunks fused with the loss (no (B, T, V) array).
        """
        if self.adapters.merged and self.trainable & self.adapters.param_names():
            raise MiniLoraStateError("cannot train while the adapters are merged; unmerge first")
        h, (c_emb, caches, c_norm) = self.hidden_states(input_ids, train=train, keep=True)
        head = self.head_weight_name()
        loss, dh, dw = head_cross_entropy(h, self.weight(head), self.shifted_targets(labels),
                                          grad_w=head in self.trainable)        # dh (B, T, C)
        grads: dict = {}
        if dw is not None:
            accumulate(grads, head, dw)
        dx = self._norm_backward(dh, c_norm, "model.norm.weight", grads)
        for i in reversed(range(self.config.num_hidden_layers)):
            dx = self._layer_backward(dx, i, self._recompute(i, caches[i]), grads)
            caches[i] = None
        if "model.embed_tokens.weight" in self.trainable:
            accumulate(grads, "model.embed_tokens.weight", embedding_backward(dx, c_emb))
        return loss, grads

    # ---- bookkeeping --------------------------------------------------------------------
    def quantize_base(self, bits: int, group_size: int | None = None, fmt: str = "absmax",
                      double_quant: bool = False):
        """Store the frozen decoder-layer linear weights quantized, in format `fmt`.

        fmt: "absmax" (bits 8 or 4, per row or group_size), "nf4" (QLoRA's NormalFloat4, bits 4,
        double_quant optional), or a GGUF block type "q8_0" (bits 8), "q4_0" / "q4_1" (bits 4);
        see minilora.quant.formats. Embeddings, norms and lm_head stay float, as bitsandbytes
        leaves lm_head by default. bits=16 leaves the model unchanged. Forward and backward
        dequantize one layer's weights at a time and keep no dequantized copy (minilora.projections).
        """
        if bits == 16:
            return
        from minilora.quant import quantize_as

        if self.adapters.merged:
            raise MiniLoraStateError("quantize before merging, not after")
        self._stacked = {}                             # the float stacks go with the float weights
        for name in list(self.params):                 # one at a time: the float copy is freed as we go
            if ".layers." in name and name.endswith("_proj.weight") and name not in self.trainable:
                self.quantized[name] = quantize_as(self.params[name], fmt, bits, group_size, double_quant)
                del self.params[name]

    def dequantize_base(self):
        """Turn a quantized base back into float weights of the model's dtype (e.g. before merging)."""
        for name in list(self.quantized):
            self.params[name] = self.weight(name)
            del self.quantized[name]

    def set_full_finetuning(self):
        """Every base parameter trainable (the comparison to LoRA); LoRA factors, if any, too."""
        if self.quantized:
            raise MiniLoraStateError("full fine-tuning needs float weights; this model's base is quantized")
        self.trainable = set(self.params)

    def num_params(self, names=None) -> int:
        """Elements in the given parameter names (default: all, quantized base included)."""
        names = set(self.params) | set(self.quantized) if names is None else names
        total = 0
        for n in names:
            arr = self.params.get(n)
            total += int(arr.size) if arr is not None else _prod(self.quantized[n].shape)
        return total


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
