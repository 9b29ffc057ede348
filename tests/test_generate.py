"""Generation: KV-cache logits equal full-forward logits, greedy and sampling, `minilora generate`."""
import shutil

import numpy as np
import pytest
from test_adapter_io import randomize_b  # tests/ is on sys.path (rootdir conftest)
from test_io import small_model

from minilora.adapters import LoraConfig, adapters_disabled, add_lora, merge_lora
from minilora.cli import main
from minilora.errors import MiniLoraError
from minilora.inference.generate import KVCache, filter_logits, forward_cached, generate, sample_next
from minilora.io import from_pretrained, save_pretrained
from minilora.io.peft import save_adapter
from minilora.runs.recipes import base_dir


def lora_model(dtype="float64", seed=0):
    model = small_model(dtype=dtype, seed=seed)
    add_lora(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"), seed=seed)
    randomize_b(model, seed + 7, scale=0.3)
    return model


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_kv_cache_logits_equal_full_forward(dtype, tol):
    model = lora_model(dtype)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 23, (2, 11))
    full = model.forward(ids)                                               # (B, T, V)
    cache = KVCache.allocate(model, 2, 11)
    parts = [forward_cached(model, ids[:, :6], cache)]                       # prefill
    for t in range(6, 9):                                                   # one token at a time
        parts.append(forward_cached(model, ids[:, t:t + 1], cache))
    parts.append(forward_cached(model, ids[:, 9:], cache))                   # a chunk of two
    assert cache.length == 11
    got = np.concatenate(parts, axis=1)
    assert got.shape == full.shape and np.abs(got - full).max() < tol
    with pytest.raises(MiniLoraError, match="KV cache holds 11 positions; 11 used, 1 more asked"):
        forward_cached(model, ids[:, :1], cache)


def test_greedy_with_and_without_cache_agree_and_are_argmax():
    model = lora_model("float64", seed=1)
    prompt = np.array([1, 5, 9, 3])
    out = generate(model, prompt, 12)
    assert out.shape == (16,) and np.array_equal(out[:4], prompt)
    assert np.array_equal(out, generate(model, prompt, 12, use_cache=False))
    for t in range(4, 16):                                                  # each token: argmax of the full forward
        assert out[t] == np.argmax(model.forward(out[None, :t])[0, -1])


def test_merged_unmerged_and_disabled_generation():
    model = small_model("float32", seed=2)
    base_tokens = generate(model, np.array([1, 2, 3]), 20)
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), seed=3)
    randomize_b(model, 4, scale=0.3)
    unmerged = generate(model, np.array([1, 2, 3]), 20)
    assert not np.array_equal(unmerged, base_tokens)                        # the adapter changes the text
    with adapters_disabled(model):
        assert np.array_equal(generate(model, np.array([1, 2, 3]), 20), base_tokens)
    merge_lora(model)
    assert np.array_equal(generate(model, np.array([1, 2, 3]), 20), unmerged)


def test_eos_stops_and_pads_finished_rows():
    model = lora_model("float64", seed=3)
    prompts = np.array([[1, 5, 9], [1, 7, 7]])
    free = generate(model, prompts, 10)
    eos = int(free[0, 5])                                                   # row 0's third new token
    first = int(np.argmax(free[0, 3:] == eos))
    out = generate(model, prompts, 10, eos_token_id=[eos, 99])
    row1_hits = np.flatnonzero(free[1, 3:] == eos)
    stop = max(first, row1_hits[0] if row1_hits.size else 10)
    assert out.shape[1] == 3 + min(stop + 1, 10)
    assert np.all(out[0, 3 + first:] == eos)                                # finished row keeps emitting eos
    assert np.array_equal(out[:, :3 + first + 1], free[:, :3 + first + 1])


def test_filters_keep_the_right_tokens():
    z = np.log(np.array([[0.5, 0.3, 0.12, 0.08]]))
    kept = lambda **kw: np.flatnonzero(np.isfinite(filter_logits(z, **kw)[0])).tolist()  # noqa: E731
    assert kept(top_p=0.75) == [0, 1]            # mass before token 2 is 0.8 >= 0.75
    assert kept(top_p=0.85) == [0, 1, 2]
    assert kept(top_p=0.3) == [0]                # the best token always stays
    assert kept(top_k=3) == [0, 1, 2] and kept(top_k=10) == [0, 1, 2, 3]
    ties = np.array([[1.0, 2.0, 2.0, 3.0, 0.0]])
    assert np.flatnonzero(np.isfinite(filter_logits(ties, top_k=2)[0])).tolist() == [1, 2, 3]  # ties kept


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.5, 3, None), (2.0, None, 0.8)])
def test_sampling_frequencies_match_the_filtered_softmax(temperature, top_k, top_p):
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 40000
    draws = sample_next(np.tile(logits, (n, 1)), np.random.default_rng(0), temperature, top_k, top_p)
    z = logits / temperature
    order = np.argsort(-z)
    p_sorted = np.exp(z[order]) / np.exp(z).sum()
    keep = np.zeros(6, bool)
    k = top_k or 6
    for i, tok in enumerate(order[:k]):
        if top_p is None or (p_sorted[:i].sum() / p_sorted[:k].sum() if top_k else p_sorted[:i].sum()) < top_p:
            keep[tok] = True
    want = np.where(keep, np.exp(z), 0.0)
    want /= want.sum()
    freq = np.bincount(draws, minlength=6) / n
    assert np.abs(freq - want).max() < 0.01
    assert np.all(freq[~keep] == 0)


def test_sampling_is_seeded_and_limits_reduce_to_greedy():
    model = lora_model("float64", seed=4)
    prompt = np.array([1, 2])
    a = generate(model, prompt, 15, temperature=1.5, rng=np.random.default_rng(7))
    b = generate(model, prompt, 15, temperature=1.5, rng=np.random.default_rng(7))
    c = generate(model, prompt, 15, temperature=1.5, rng=np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    greedy = generate(model, prompt, 15)
    assert np.array_equal(generate(model, prompt, 15, temperature=1.0, top_k=1, rng=np.random.default_rng(1)), greedy)
    assert np.array_equal(generate(model, prompt, 15, temperature=1.0, top_p=1e-9, rng=np.random.default_rng(1)),
                          greedy)


@pytest.mark.parametrize("kw, message", [
    (dict(temperature=1.0), "explicit random generator"),
    (dict(temperature=-1.0), "temperature must be a number >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_k=0), "top_k must be a positive integer"),
])
def test_sampling_errors(kw, message):
    with pytest.raises(MiniLoraError, match=message):
        generate(small_model(), np.array([1, 2]), 3, **kw)


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_generate_with_and_without_adapter(tmp_path, capsys):
    args = ["generate", base_dir(), "--prompt", "Shares of", "--max-new-tokens", "24"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert plain.startswith("Shares of") and len(plain) > len("Shares of\n")
    model = from_pretrained(base_dir())
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), seed=0)
    randomize_b(model, 1, scale=0.5)
    save_adapter(model, tmp_path / "adapter")
    assert main(args + ["--adapter", str(tmp_path / "adapter")]) == 0
    with_adapter = capsys.readouterr().out
    assert with_adapter.startswith("Shares of") and with_adapter != plain
    assert main(args + ["--adapter", str(tmp_path / "adapter"), "--merge", "--timing"]) == 0
    out = capsys.readouterr()
    assert out.out == with_adapter and "tokens/s, KV cache" in out.err        # merged == unmerged greedy text
    assert main(args + ["--temperature", "0.9", "--top-p", "0.9", "--seed", "3"]) == 0
    assert capsys.readouterr().out.startswith("Shares of")


def test_cli_uses_the_folders_tokenizer_json(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[UNK]", "<s>", "</s>"] + [f"w{i}" for i in range(256)]   # the tiny base's 259 ids
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    shutil.copytree(base_dir(), tmp_path / "m")
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    assert main(["generate", str(tmp_path / "m"), "--prompt", "w3 w4", "--max-new-tokens", "6"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("w3 w4")
    assert all(w in words for w in text[len("w3 w4"):].split())          # WordLevel words, not bytes


def test_cli_errors_are_one_line(tmp_path, capsys):
    for args, message in [
        (["--merge"], "--merge needs --adapter"),
        (["--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
        (["--top-k", "0"], "top_k must be a positive integer"),
    ]:
        assert main(["generate", base_dir(), "--prompt", "x"] + args) == 2
        err = capsys.readouterr().err
        assert err == f"minilora: error: {err.split('error: ')[1]}" and message in err and err.count("\n") == 1
    save_pretrained(small_model(), tmp_path / "m")                          # vocab 23, no tokenizer.json
    assert main(["generate", str(tmp_path / "m"), "--prompt", "x"]) == 2
    assert "the byte tokenizer (ids < 259) does not fit a model with vocab_size 23" in capsys.readouterr().err
