"""The decoder layer of LlamaForCausalLM, forward and backward (a base class of the model).

    a = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm(x)
    y = a + down_proj(silu(gate_proj(n2)) * up_proj(n2)),                        n2 = rmsnorm(a)

q/k/v and gate/up each run as one GEMM against their stacked frozen weights
(minilora.projections). With ``model.gradient_checkpointing`` the training forward keeps only each
layer's input (a LayerCheckpoint) and the backward reruns the layer first (_recompute), replaying
LoRA dropout's masks from a copy of the generator.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.layers.attention import attention_backward, attention_forward
from minilora.layers.mlp import swiglu_backward, swiglu_forward
from minilora.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward
from minilora.layers.rope import rope_backward, rope_forward
from minilora.projections import accumulate, group_backward, group_forward

QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")     # one input, one stacked GEMM
GATE_UP = ("mlp.gate_proj", "mlp.up_proj")


class LayerCheckpoint(NamedTuple):
    """What gradient checkpointing keeps of a decoder layer: its input, not its inside."""
    x: object        # (B, T, C) the layer's input
    rng: object      # a copy of model.rng before the layer (LoRA dropout's masks replay), or None
    train: bool


class DecoderLayer:
    """layer_forward / _layer_backward of LlamaForCausalLM (which supplies config, params, xp, rng)."""

    def layer_forward(self, x, i: int, cos, sin, train: bool = False, kv=None):
        """Decoder layer i on x (B, T, C) -> (y (B, T, C), cache for layer_backward).

        The one decoder layer: training, evaluation and generation all run it. With kv (an
        inference.KVCache) the new positions are kv.length .. kv.length+T-1: their keys and values
        (after RoPE) are written into the cache and the queries attend to every cached position
        (cos, sin are then the tables of those positions); the caller advances kv.length.
        q/k/v and gate/up each run as one base GEMM (minilora.projections.group_forward).
        """
        c, p = self.config, f"model.layers.{i}."
        b, t, _ = x.shape
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        n1, c_n1 = rmsnorm_forward(x, self.params[p + "input_layernorm.weight"], c.rms_norm_eps)
        qkv, c_qkv = group_forward(self, n1, [p + m for m in QKV], train)          # (B, T, (nh+2nkv)*hd)
        qkv = qkv.reshape(b, t, nh + 2 * nkv, hd).transpose(0, 2, 1, 3)             # (B, nh+2nkv, T, hd)
        q, c_rq = rope_forward(qkv[:, :nh], cos, sin)                                # (B, nh, T, hd)
        k, c_rk = rope_forward(qkv[:, nh:nh + nkv], cos, sin)                        # (B, nkv, T, hd)
        v = self.xp.ascontiguousarray(qkv[:, nh + nkv:])                             # (B, nkv, T, hd)
        del qkv                                      # (so the attention cache does not keep it)
        if kv is not None:                           # append to the cache, attend to all of it
            start, end = kv.length, kv.length + t
            kv.k[i][:, :, start:end] = k
            kv.v[i][:, :, start:end] = v
            k, v = kv.k[i][:, :, :end], kv.v[i][:, :, :end]                          # (B, nkv, end, hd)
        att, c_att = attention_forward(q, k, v)                                      # (B, nh, T, hd)
        att = att.transpose(0, 2, 1, 3).reshape(b, t, nh * hd)                       # (B, T, nh*hd)
        a, c_o = group_forward(self, att, [p + "self_attn.o_proj"], train)           # (B, T, C)
        a += x                                       # a = x + o_proj(att), in the fresh output
        n2, c_n2 = rmsnorm_forward(a, self.params[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
        gu, c_gu = group_forward(self, n2, [p + m for m in GATE_UP], train)         # (B, T, 2I)
        inter = gu.shape[-1] // 2
        m, c_m = swiglu_forward(gu[..., :inter], gu[..., inter:])                    # (B, T, I)
        d, c_d = group_forward(self, m, [p + "mlp.down_proj"], train)                # (B, T, C)
        d += a                                       # y = a + down_proj(m)
        return d, (c_n1, c_qkv, c_rq, c_rk, c_att, c_o, c_n2, c_gu, c_m, c_d)

    def _layer_backward(self, dy, i: int, cache, grads: dict):
        c, p = self.config, f"model.layers.{i}."
        c_n1, c_qkv, c_rq, c_rk, c_att, c_o, c_n2, c_gu, c_m, c_d = cache
        b, t, _ = dy.shape
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        # MLP branch: y = a + down(swiglu(gate(n2), up(n2)))
        dm = group_backward(self, dy, c_d, grads)
        inter = dm.shape[-1]
        dgu = self.xp.empty(dm.shape[:-1] + (2 * inter,), dtype=dm.dtype)          # (B, T, 2I)
        swiglu_backward(dm, c_m, out=(dgu[..., :inter], dgu[..., inter:]))
        dn2 = group_backward(self, dgu, c_gu, grads)
        da = self._norm_backward(dn2, c_n2, p + "post_attention_layernorm.weight", grads)
        da += dy                                                                     # never into dy
        # attention branch: a = x + o_proj(attention(...))
        datt = group_backward(self, da, c_o, grads)                                  # (B, T, nh*hd)
        datt = datt.reshape(b, t, nh, hd).transpose(0, 2, 1, 3)                      # (B, nh, T, hd)
        dq, dk, dv = attention_backward(datt, c_att)
        dqkv = self.xp.empty((b, t, nh + 2 * nkv, hd), dtype=dy.dtype)              # (B, T, nh+2nkv, hd)
        dqkv[:, :, :nh] = rope_backward(dq, c_rq).transpose(0, 2, 1, 3)
        dqkv[:, :, nh:nh + nkv] = rope_backward(dk, c_rk).transpose(0, 2, 1, 3)
        dqkv[:, :, nh + nkv:] = dv.transpose(0, 2, 1, 3)
        dn1 = group_backward(self, dqkv.reshape(b, t, -1), c_qkv, grads)
        dx = self._norm_backward(dn1, c_n1, p + "input_layernorm.weight", grads)
        dx += da
        return dx

    def _dropout(self) -> bool:
        return self.adapters.enabled and any(lm.dropout > 0 for lm in self.adapters.modules.values())

    def _recompute(self, i: int, cache):
        """A layer's cache; for a checkpoint, its forward rerun on the kept input (same dropout masks)."""
        if not isinstance(cache, LayerCheckpoint):
            return cache
        x, rng, train = cache
        saved = self.rng
        self.rng = rng if rng is not None else saved     # replay the masks drawn in the forward
        try:
            return self.layer_forward(x, i, *self.rope(x.shape[1]), train)[1]
        finally:
            self.rng = saved

    def _norm_backward(self, dout, cache, wname: str, grads: dict):
        dx, dw = rmsnorm_backward(dout, cache, frozen=wname not in self.trainable)
        if dw is not None:
            accumulate(grads, wname, dw)
        return dx
