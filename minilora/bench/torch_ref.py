"""The same Llama in plain PyTorch: the reference the benchmark races (optional; needs torch).

Written for ``minilora bench`` only, with no transformers or peft in the way: eager mode,
float32, ``nn.Linear``-shaped frozen weights plus LoRA A and B as PEFT computes them
(``h = x W0^T + s * (x A^T) B^T``), RMSNorm / RoPE (rotate_half) / causal GQA attention /
SwiGLU / shifted cross-entropy with transformers' LlamaForCausalLM semantics, and
``torch.optim.AdamW`` over the trainable parameters only. The weights are copied from a
minilora model, so both sides compute the same numbers (tests/test_bench.py checks the loss).

Attention is ``torch.nn.functional.scaled_dot_product_attention`` (what transformers uses by
default on the CPU) or, with ``attention="eager"``, the explicit matmul-softmax-matmul of
transformers' eager path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilora.backend import to_numpy


def _t(a, requires_grad: bool):
    """A float32 torch tensor with its own copy of a minilora array."""
    return nn.Parameter(torch.from_numpy(to_numpy(a).astype("float32").copy()),
                        requires_grad=requires_grad)


class TorchLoraLinear(nn.Module):
    """y = x W0^T + s * (x A^T) B^T; W0 trainable only for full fine-tuning."""

    def __init__(self, w, a=None, b=None, scale: float = 0.0, train_base: bool = False):
        super().__init__()
        self.weight = _t(w, train_base)                          # (out, in)
        self.lora_A = None if a is None else _t(a, True)         # (r, in)
        self.lora_B = None if b is None else _t(b, True)         # (out, r)
        self.scale = scale

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale
        return y


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class TorchLlama(nn.Module):
    """A LlamaForCausalLM-equivalent over weights copied from a minilora LlamaForCausalLM."""

    def __init__(self, model, attention: str = "sdpa"):
        super().__init__()
        c = model.config
        self.c, self.attention = c, attention
        full = "model.embed_tokens.weight" in model.trainable
        self.embed = _t(model.params["model.embed_tokens.weight"], full)
        self.layers = nn.ModuleList()
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            layer = nn.Module()
            layer.ln1 = _t(model.params[p + "input_layernorm.weight"], full)
            layer.ln2 = _t(model.params[p + "post_attention_layernorm.weight"], full)
            for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
                m = p + name
                lm = model.adapters.modules.get(m)
                a = b = None
                if lm is not None:
                    a, b = model.params[m + ".lora_A.weight"], model.params[m + ".lora_B.weight"]
                layer.add_module(name.split(".")[1],
                                 TorchLoraLinear(model.weight(m + ".weight"), a, b,
                                                 lm.scale if lm else 0.0, full))
            self.layers.append(layer)
        self.norm = _t(model.params["model.norm.weight"], full)
        self.tied = c.tie_word_embeddings
        if not self.tied:
            self.lm_head = _t(model.params["lm_head.weight"], full)
        cos, sin = model.rope(c.max_position_embeddings)
        self.register_buffer("cos", torch.from_numpy(to_numpy(cos).astype("float32").copy()))
        self.register_buffer("sin", torch.from_numpy(to_numpy(sin).astype("float32").copy()))

    def _attn(self, layer, x, cos, sin):
        c = self.c
        b, t, _ = x.shape
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = layer.q_proj(x).view(b, t, nh, hd).transpose(1, 2)
        k = layer.k_proj(x).view(b, t, nkv, hd).transpose(1, 2)
        v = layer.v_proj(x).view(b, t, nkv, hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if self.attention == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nkv != nh)
        else:                                                    # transformers' eager path
            g = nh // nkv
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
            s = (q @ k.transpose(-1, -2)) * hd ** -0.5
            mask = torch.ones(t, t, dtype=torch.bool).triu(1)
            s = s.masked_fill(mask, float("-inf"))
            o = torch.softmax(s, dim=-1) @ v
        return layer.o_proj(o.transpose(1, 2).reshape(b, t, nh * hd))

    def hidden(self, ids):
        c = self.c
        x = F.embedding(ids, self.embed)
        t = ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        for layer in self.layers:
            x = x + self._attn(layer, _rms(x, layer.ln1, c.rms_norm_eps), cos, sin)
            n2 = _rms(x, layer.ln2, c.rms_norm_eps)
            x = x + layer.down_proj(F.silu(layer.gate_proj(n2)) * layer.up_proj(n2))
        return _rms(x, self.norm, c.rms_norm_eps)

    def forward(self, ids):
        return F.linear(self.hidden(ids), self.embed if self.tied else self.lm_head)

    def loss(self, ids, labels):
        """The causal-LM loss: position t predicts labels[t + 1], -100 ignored (as minilora)."""
        h = self.hidden(ids)[:, :-1]
        logits = F.linear(h, self.embed if self.tied else self.lm_head)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)


class TorchTrainer:
    """One training step (forward, backward, AdamW) of a TorchLlama, like minilora's."""

    def __init__(self, model, lr: float = 1e-3, attention: str = "sdpa", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.net = TorchLlama(model, attention)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def step(self, ids, labels) -> float:
        ids_t = torch.from_numpy(to_numpy(ids).astype("int64"))
        lab_t = torch.from_numpy(to_numpy(labels).astype("int64"))
        self.opt.zero_grad(set_to_none=True)
        loss = self.net.loss(ids_t, lab_t)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def loss(self, ids, labels) -> float:
        with torch.no_grad():
            return float(self.net.loss(torch.from_numpy(to_numpy(ids).astype("int64")),
                                       torch.from_numpy(to_numpy(labels).astype("int64"))))

    def forward(self, ids):
        with torch.no_grad():
            return self.net(torch.from_numpy(to_numpy(ids).astype("int64")))


def torch_threads() -> int:
    return torch.get_num_threads()
