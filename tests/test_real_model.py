"""SmolLM2-135M-Instruct end to end against transformers + PEFT: LoRA gradients of a PEFT adapter,
and the chat-template training format. Skips unless `minilora fetch smollm2-135m-instruct` has run.

The expected values (tests/reference/smollm2_lora.npz and the adapter in tests/reference/smollm2_lora/)
were written by transformers and PEFT (scripts/smollm2_lora_reference.py, oracle environment);
minilora does not produce them. The model loads once for the module (several seconds), in float64,
and is compared with the oracle's float64 run of the same base and adapter: our side is then the
same on every BLAS build. Measured: loss within 1.2e-6, gradients within 7.5e-5 relative (layer 29
v_proj lora_B; float32 on both sides gives 7.8e-5, and the oracle's float32 and float64 runs agree
to 6.3e-6, so it is a difference between the implementations, not rounding; transformers keeps
RMSNorm, the RoPE tables and the loss in float32 even for a float64 model, a candidate cause).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from minilora.data import LABELS, collate, sequence_logprob
from minilora.data.formats import encode_record
from minilora.gradcheck import rel_error
from minilora.inference.evaluate import choice_scores

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

REF = Path(__file__).parent / "reference"


@pytest.fixture(scope="module")
def smollm2():
    """(model with the reference PEFT adapter loaded, tokenizer)."""
    from conftest import smollm2_gguf

    from minilora.data import load_tokenizer
    from minilora.io import from_pretrained
    from minilora.io.peft import load_adapter

    path = smollm2_gguf()
    model = from_pretrained(path, dtype="float64")
    load_adapter(model, str(REF / "smollm2_lora"))
    return model, load_tokenizer(path, model.config)


@pytest.fixture(scope="module")
def ref():
    with np.load(REF / "smollm2_lora.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_reference_is_small_and_covers_first_middle_last_layers(ref):
    assert (REF / "smollm2_lora.npz").stat().st_size < 500_000
    grads = [k for k in ref if k.startswith("grad/")]
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in grads}
    assert layers == {0, 15, 29} and len(grads) == 12 and len([k for k in ref if k.startswith("grad64/")]) == 12
    assert all(np.abs(ref[k]).max() > 0 for k in grads)                 # B was nonzero: A has a gradient too


def test_lora_loss_and_gradients_equal_peft(smollm2, ref):
    model, _ = smollm2
    assert model.trainable == model.adapters.param_names()
    loss, grads = model.loss_and_grads(ref["input_ids"][None], ref["labels"][None], train=True)
    assert abs(float(loss) - float(ref["loss64"])) <= 1e-4 * abs(float(ref["loss64"]))
    assert abs(float(ref["loss"]) - float(ref["loss64"])) <= 1e-5 * abs(float(ref["loss64"]))   # float32 agrees
    for key in (k for k in ref if k.startswith("grad64/")):
        name = key[len("grad64/"):]
        assert grads[name].shape == ref[key].shape, name
        assert rel_error(grads[name], ref[key]) < 1e-4, (name, rel_error(grads[name], ref[key]))


def test_chat_training_example_equals_transformers_ids_and_labels(smollm2, ref):
    """The oracle's prompt and answer (transformers' chat template, answer through <|im_end|>) are
    exactly what minilora's formats make of the same row, as prompt/completion and as messages."""
    _, tok = smollm2
    about = json.loads(str(ref["about"]))
    expected = (ref["input_ids"].tolist(), ref["labels"].tolist())
    assert encode_record({"prompt": about["question"], "completion": about["answer"]}, tok, 512) == expected
    chat = {"messages": [{"role": "user", "content": about["question"]},
                         {"role": "assistant", "content": about["answer"]}]}
    assert encode_record(chat, tok, 512) == expected
    ids, labels = encode_record(chat, tok, 512, train_on_inputs=True)
    assert ids == expected[0] and labels == [-100] + ids[1:]


def test_label_choice_scores_the_training_format(smollm2):
    """Evaluation scores the same ids training learns: the cached choice scores equal the full-sequence
    log-likelihood of encode_record's examples, under the chat template."""
    model, tok = smollm2
    rows = [{"context": "Sentiment (negative/neutral/positive)?\nAcme Q3 profit rises 8%", "target": "positive"}]
    seqs = [encode_record({"context": rows[0]["context"], "target": lab}, tok, 512) for lab in LABELS]
    assert all(s[0][-1] == tok.eos_token_id == tok.tok.token_to_id("<|im_end|>") for s in seqs)
    ids, lab = collate(seqs, tok.pad_token_id)
    full = np.asarray(sequence_logprob(model.forward(ids), lab))
    cached = np.asarray(choice_scores(model, rows, tok, LABELS, max_len=512)[0])
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-4)
