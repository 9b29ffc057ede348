"""Reference LoRA gradients for SmolLM2-135M-Instruct from transformers + PEFT (the oracle).

For tests/test_real_model.py.

Runs in an environment with torch, transformers, peft and gguf (not minilora's runtime):
transformers reads the GGUF file (gguf_file=..., float32), PEFT adds LoRA r=4 (alpha 8) on q_proj
and v_proj with its default A and a seeded nonzero B (so that A gets a gradient too), and saves
the adapter in PEFT's format. One chat-template example (a user question and an assistant answer
ending with <|im_end|>, labels -100 on the prompt) goes forward and backward. Written:

    tests/reference/smollm2_lora/            the PEFT adapter (adapter_config.json, adapter_model.safetensors)
    tests/reference/smollm2_lora.npz         input_ids, labels, loss, and the gradients of the lora_A / lora_B
                                             factors of q_proj and v_proj in layers 0, 15 and 29 (minilora's names);
                                             loss64 / grad64/...: the same base and adapter run again in float64

The prompt ids come from transformers' own tokenizer and chat template; the answer is the
assistant turn rendered by the template, cut after its <|im_end|> (the newline the template writes
after it is not part of the answer).

    PYTHONPATH=. /work/oracle-venv/bin/python scripts/smollm2_lora_reference.py [--gguf PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "tests", "reference")
QUESTION = "Name one use of a low-rank adapter."
ANSWER = "Fine-tuning a large model cheaply."
LAYERS = (0, 15, 29)
RANK, ALPHA, SEED = 4, 8, 0


def labelled_ids(tok):
    """(input_ids, labels) of the question and answer: transformers' chat template, the answer through <|im_end|>."""
    user = [{"role": "user", "content": QUESTION}]
    prompt = list(tok.apply_chat_template(user, add_generation_prompt=True, return_dict=False))
    full = list(tok.apply_chat_template(user + [{"role": "assistant", "content": ANSWER}],
                                        add_generation_prompt=False, return_dict=False))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert full[:len(prompt)] == prompt
    cut = len(full) - full[::-1].index(end)                          # through the last <|im_end|>
    ids = full[:cut]
    return ids, [-100] * len(prompt) + ids[len(prompt):]


def chosen_grads(model, prefix) -> dict:
    """{prefix + minilora name: gradient} of the lora factors in LAYERS."""
    grads = {}
    for n, prm in model.named_parameters():
        if "lora_" in n and int(n.split(".layers.")[1].split(".")[0]) in LAYERS:
            ours = n.replace("base_model.model.", "", 1).replace(".default.weight", ".weight")
            grads[prefix + ours] = prm.grad.detach().numpy().copy()
    return grads


def float64_run(folder, name, adapter_dir, ids, labels):
    """(loss, gradients) of the same base and saved adapter in float64, which the test compares with
    minilora in float64 (deterministic on every BLAS build)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float64,
                                                attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True).double()
    out = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                labels=torch.tensor([labels]))
    out.loss.backward()
    return out.loss.item(), chosen_grads(model, "grad64/")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=None, help="the GGUF file (default: minilora's cached smollm2-135m-instruct)")
    args = p.parse_args(argv)
    path = args.gguf
    if path is None:
        sys.path.insert(0, os.path.join(HERE, ".."))
        from minilora.runs.registry import resolve_model
        path = resolve_model("smollm2-135m-instruct", fetch_missing=False)

    import numpy as np
    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager")
    torch.manual_seed(SEED)
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for n, prm in model.named_parameters():
            if "lora_B" in n:
                prm.copy_(0.02 * torch.randn(prm.shape, generator=gen))
    model.train()                                                     # dropout is 0: train == eval
    ids, labels = labelled_ids(tok)
    out = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                labels=torch.tensor([labels]))
    out.loss.backward()

    grads = chosen_grads(model, "grad/")
    adapter_dir = os.path.join(REF, "smollm2_lora")
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(adapter_dir)
    readme = os.path.join(adapter_dir, "README.md")                  # PEFT's model card: not needed
    if os.path.exists(readme):
        os.remove(readme)
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")       # name the base, not this machine's cache
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "smollm2-135m-instruct"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    about = {"about": "transformers + PEFT on the GGUF (scripts/smollm2_lora_reference.py); float32",
             "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
             "question": QUESTION, "answer": ANSWER}
    loss64, grads64 = float64_run(folder, name, adapter_dir, ids, labels)
    np.savez_compressed(os.path.join(REF, "smollm2_lora.npz"), input_ids=np.asarray(ids, np.int64),
                        labels=np.asarray(labels, np.int64), loss=np.float64(out.loss.item()),
                        loss64=np.float64(loss64), about=np.asarray(json.dumps(about)), **grads, **grads64)
    print(f"wrote {adapter_dir}/ and smollm2_lora.npz: {len(ids)} ids, loss {out.loss.item():.6f}, "
          f"{len(grads)} gradients")
    return 0


if __name__ == "__main__":
    sys.exit(main())
