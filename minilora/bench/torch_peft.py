"""transformers' LlamaForCausalLM wrapped by PEFT: the reference for the real-model step (optional).

What a user would run instead of minilora on a real model's shapes: ``transformers`` builds the
model from minilora's config (SDPA attention, float32, eager mode), PEFT adds LoRA to the same
modules with the same r and alpha, the weights (base and LoRA factors) are copied from a minilora
model, the loss is ``model(input_ids, labels=labels).loss`` (the same shift and -100 semantics)
and ``torch.optim.AdamW`` steps the LoRA factors. Needs torch, transformers and peft.
"""
from __future__ import annotations

import torch

from minilora.backend import to_numpy


def build_peft_model(model, lora_kw: dict, copy_weights: bool = True):
    """A PEFT-wrapped transformers Llama with minilora `model`'s config (and weights when asked)."""
    import transformers
    from peft import LoraConfig, get_peft_model

    c = model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
        max_position_embeddings=c.max_position_embeddings, rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings, attn_implementation="sdpa")
    hf = transformers.LlamaForCausalLM(hf_cfg).float()
    if copy_weights:
        state = {k: torch.from_numpy(to_numpy(v).copy()) for k, v in model.params.items() if "lora_" not in k}
        hf.load_state_dict(state, strict=False)
        if c.tie_word_embeddings:
            hf.tie_weights()
    net = get_peft_model(hf, LoraConfig(r=lora_kw["r"], lora_alpha=lora_kw["lora_alpha"], lora_dropout=0.0,
                                        target_modules=list(lora_kw["target_modules"])))
    if copy_weights:
        with torch.no_grad():
            for name, p in net.named_parameters():
                if "lora_" in name:                # base_model.model.<hf name>.lora_A.default.weight
                    key = name.removeprefix("base_model.model.").replace(".default", "")
                    p.copy_(torch.from_numpy(to_numpy(model.params[key])))
    return net


class PeftTrainer:
    """One training step of the PEFT model: forward with labels, backward, AdamW over LoRA only."""

    def __init__(self, model, lora_kw: dict, lr: float = 1e-4, threads: int | None = None,
                 copy_weights: bool = True, device: str = "cpu"):
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.net = build_peft_model(model, lora_kw, copy_weights).to(device)
        self.net.train()
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def step(self, ids, labels) -> float:
        ids_t = torch.from_numpy(to_numpy(ids).astype("int64")).to(self.device)
        lab_t = torch.from_numpy(to_numpy(labels).astype("int64")).to(self.device)
        self.opt.zero_grad(set_to_none=True)
        loss = self.net(input_ids=ids_t, labels=lab_t).loss
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def loss(self, ids, labels) -> float:
        with torch.no_grad():
            return float(self.net(input_ids=torch.from_numpy(to_numpy(ids).astype("int64")).to(self.device),
                                  labels=torch.from_numpy(to_numpy(labels).astype("int64")).to(self.device)).loss)
