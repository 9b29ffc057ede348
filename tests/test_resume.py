"""Checkpoints and exact resume: a run interrupted and resumed into a fresh model follows the same
loss trajectory bit for bit (float64, LoRA dropout, accumulation, warmup + cosine); a non-finite
step keeps the last good checkpoint; Ctrl-C saves one; a mismatched resume is refused."""
import os
import signal

import numpy as np
import pytest

import minilora.training.loop as train_mod
from minilora.adapters import LoraConfig, add_lora
from minilora.config import LlamaConfig
from minilora.errors import MiniLoraError
from minilora.model import LlamaForCausalLM
from minilora.training import TrainConfig, TrainingInterrupted, fit, total_steps
from minilora.training.checkpoint import load_checkpoint, save_checkpoint

CFG = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
TCFG = TrainConfig(learning_rate=5e-2, num_epochs=2, batch_size=3, gradient_accumulation_steps=2,
                   warmup_ratio=0.25, min_lr_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=7)
LCFG = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.3)


def make_examples(n=14, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = int(rng.integers(4, 9))
        ids = [int(x) for x in rng.integers(0, 256, t)]        # bytes; pad is 258
        labels = [-100] * 2 + ids[2:]
        out.append((ids, labels))
    return out


def fresh_model():
    model = LlamaForCausalLM.init(CFG, seed=3, dtype="float64")
    add_lora(model, LCFG, seed=5)
    return model


EX = make_examples()
N_STEPS = total_steps(len(EX), TCFG)          # 14 examples / 3 = 5 micro-batches -> 3 steps/epoch -> 6


def straight_run():
    model = fresh_model()
    res = fit(model, EX, TCFG, progress=False)
    return res, model


class Interrupt:
    """Wrap model.loss_and_grads: raise KeyboardInterrupt right after micro-batch call number `at`
    (so the dropout generator has already advanced inside the interrupted step)."""

    def __init__(self, model, at):
        self.real, self.at, self.calls = model.loss_and_grads, at, 0
        model.loss_and_grads = self

    def __call__(self, *a, **kw):
        out = self.real(*a, **kw)
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return out


@pytest.fixture(scope="module")
def reference():
    return straight_run()


def test_reference_run_uses_dropout_and_moves(reference):
    res, model = reference
    assert res.steps == N_STEPS == 6
    assert len(set(res.losses)) == N_STEPS
    # dropout is active: the same run with another generator seed gives other losses
    other = fresh_model()
    other.rng = np.random.default_rng(99)
    assert fit(other, EX, TCFG, progress=False).losses != res.losses


# micro-batch calls: epoch 0 is calls 1..5 (steps of 2, 2, 1 micro-batches), epoch 1 is 6..10
@pytest.mark.parametrize("at", [1, 2, 4, 5, 6, 9])
def test_interrupt_save_resume_is_bitwise_identical(reference, tmp_path, at):
    ref_res, ref_model = reference
    ckpt = tmp_path / "ckpt"
    model = fresh_model()
    Interrupt(model, at)
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, EX, TCFG, progress=False, checkpoint_dir=ckpt)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.checkpoint == str(ckpt)
    done = info.value.step
    assert done < N_STEPS
    state = load_checkpoint(ckpt).state
    assert state["step"] == done and state["losses"] == ref_res.losses[:done]

    resumed_model = fresh_model()                         # a fresh object: nothing carried over in memory
    res = fit(resumed_model, EX, TCFG, progress=False, checkpoint_dir=ckpt, resume_from=ckpt)
    assert res.resumed_from == done
    assert res.losses == ref_res.losses                    # bitwise: == on Python floats
    assert set(resumed_model.params) == set(ref_model.params)
    for name, arr in ref_model.params.items():
        assert np.array_equal(resumed_model.params[name], arr), name


def test_resume_without_the_generator_state_diverges(reference, tmp_path):
    """The RNG state matters: drop it from the checkpoint and the resumed losses differ."""
    ref_res, _ = reference
    ckpt = tmp_path / "ckpt"
    model = fresh_model()
    Interrupt(model, 4)
    with pytest.raises(TrainingInterrupted):
        fit(model, EX, TCFG, progress=False, checkpoint_dir=ckpt)
    c = load_checkpoint(ckpt)
    state = {k: v for k, v in c.state.items() if k not in ("format", "version", "rng")}
    save_checkpoint(ckpt, c.params, c.optimizer, state, rng=None)
    res = fit(fresh_model(), EX, TCFG, progress=False, resume_from=ckpt)
    k = c.state["step"]
    assert res.losses[:k] == ref_res.losses[:k]
    assert res.losses[k:] != ref_res.losses[k:]


def test_periodic_checkpoints_and_resume_from_each(reference, tmp_path):
    ref_res, ref_model = reference
    for stop in range(1, N_STEPS + 1):
        ckpt = tmp_path / f"c{stop}"
        model = fresh_model()
        real = train_mod.save_checkpoint

        def counting(*a, _real=real, _stop=stop, _calls={"n": 0}, **kw):  # noqa: B006 - a fresh dict per loop
            out = _real(*a, **kw)
            _calls["n"] += 1
            if _calls["n"] == _stop:
                raise SystemExit("stop after this save")      # not a KeyboardInterrupt: no extra save
            return out

        train_mod.save_checkpoint = counting
        try:
            with pytest.raises(SystemExit):
                fit(model, EX, TCFG, progress=False, checkpoint_dir=ckpt, checkpoint_every=1)
        finally:
            train_mod.save_checkpoint = real
        res = fit(fresh_model(), EX, TCFG, progress=False, resume_from=ckpt)
        assert res.losses == ref_res.losses, stop


def test_ctrl_c_during_the_update_is_held_until_it_ends(reference, tmp_path, monkeypatch):
    """A real SIGINT sent half-way through the optimizer update: the update completes, then the
    run stops with a checkpoint of that step, and resuming still matches bit for bit."""
    ref_res, ref_model = reference
    real_step = train_mod.AdamW.step
    seen = {"n": 0}

    def step(self, params, grads, lr=None):
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)        # arrives before the update is done
        return real_step(self, params, grads, lr)

    monkeypatch.setattr(train_mod.AdamW, "step", step)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(TrainingInterrupted) as info:
        fit(fresh_model(), EX, TCFG, progress=False, checkpoint_dir=ckpt)
    assert info.value.step == 2                          # the interrupted update was completed and kept
    monkeypatch.setattr(train_mod.AdamW, "step", real_step)
    res = fit(fresh_model(), EX, TCFG, progress=False, resume_from=ckpt)
    assert res.losses == ref_res.losses


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    model = fresh_model()
    real = model.loss_and_grads
    calls = {"n": 0}

    def poisoned(*a, **kw):
        loss, grads = real(*a, **kw)
        calls["n"] += 1
        return (loss * np.nan, grads) if calls["n"] == 6 else (loss, grads)   # first micro-batch of step 4

    model.loss_and_grads = poisoned
    with pytest.raises(MiniLoraError, match=r"non-finite loss \(nan\) at step 4 .*last good checkpoint"):
        fit(model, EX, TCFG, progress=False, checkpoint_dir=ckpt, checkpoint_every=1)
    c = load_checkpoint(ckpt)
    assert c.state["step"] == 3
    for name, arr in c.params.items():               # the checkpoint holds the weights in memory: step 3
        assert np.array_equal(arr, model.params[name]) and np.all(np.isfinite(arr))


def test_non_finite_gradient_stops_before_the_update(tmp_path):
    ckpt = tmp_path / "ckpt"
    model = fresh_model()
    real = model.loss_and_grads
    calls = {"n": 0}

    def poisoned(*a, **kw):
        loss, grads = real(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 4:                                   # second micro-batch of step 2
            name = sorted(grads)[0]
            grads[name] = grads[name] * np.inf
        return loss, grads

    model.loss_and_grads = poisoned
    with pytest.raises(MiniLoraError, match="non-finite gradient norm .* at step 2"):
        fit(model, EX, TCFG, progress=False, checkpoint_dir=ckpt, checkpoint_every=1)
    c = load_checkpoint(ckpt)
    assert c.state["step"] == 1
    for name, arr in c.params.items():
        assert np.array_equal(arr, model.params[name])


def test_checkpoint_refuses_non_finite_weights_and_keeps_the_old_one(tmp_path):
    ckpt = tmp_path / "ckpt"
    good = {"a": np.ones(3)}
    save_checkpoint(ckpt, good, {}, dict(step=1, epoch=0, batch=1, optimizer_step=1, losses=[1.0],
                                         train_config={}, trainable={"a": [3]}))
    with pytest.raises(MiniLoraError, match="non-finite"):
        save_checkpoint(ckpt, {"a": np.array([1.0, np.nan, 0.0])}, {}, {"step": 2})
    c = load_checkpoint(ckpt)
    assert c.state["step"] == 1 and np.array_equal(c.params["a"], good["a"])
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]             # no temporary folder left behind


def test_ctrl_c_without_checkpoint_dir_says_so():
    model = fresh_model()
    Interrupt(model, 2)
    with pytest.raises(TrainingInterrupted, match="no checkpoint was saved") as info:
        fit(model, EX, TCFG, progress=False)
    assert info.value.checkpoint is None


@pytest.mark.parametrize("change,match", [
    (lambda: (fresh_model(), EX, TrainConfig(**{**TCFG.__dict__, "learning_rate": 0.01})), "learning_rate=0.05"),
    (lambda: (fresh_model(), EX[:-1], TCFG), "14 training examples, this run has 13"),
    (lambda: (fresh_model(), EX[::-1], TCFG), "different training examples"),
    (lambda: (_other_lora(), EX, TCFG), "different LoRA settings"),
    (lambda: (LlamaForCausalLM.init(CFG, seed=3), EX, TCFG), "dtype float64, this model is float32"),
])
def test_mismatched_resume_is_refused(tmp_path, change, match):
    ckpt = tmp_path / "ckpt"
    fit(fresh_model(), EX, TCFG, progress=False, checkpoint_dir=ckpt)
    model, ex, cfg = change()
    if not model.adapters.modules:
        add_lora(model, LCFG, seed=5)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(MiniLoraError, match=match):
        fit(model, ex, cfg, progress=False, resume_from=ckpt)
    assert all(np.array_equal(before[k], v) for k, v in model.params.items())    # a refused resume changes nothing


def _other_lora():
    model = LlamaForCausalLM.init(CFG, seed=3, dtype="float64")
    add_lora(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"],
                               lora_dropout=0.1), seed=5)
    return model


def test_resume_of_a_finished_run_changes_nothing(reference, tmp_path):
    ref_res, ref_model = reference
    ckpt = tmp_path / "ckpt"
    fit(fresh_model(), EX, TCFG, progress=False, checkpoint_dir=ckpt)
    model = fresh_model()
    res = fit(model, EX, TCFG, progress=False, resume_from=ckpt)
    assert res.losses == ref_res.losses and res.resumed_from == N_STEPS
    for name, arr in ref_model.params.items():
        assert np.array_equal(model.params[name], arr)


def test_cli_train_ctrl_c_then_resume_matches_a_straight_run(tmp_path, monkeypatch, capsys):
    """`minilora train`: Ctrl-C mid-run prints one line naming the checkpoint and exits 130;
    `--resume` finishes the run and writes the same adapter, bit for bit, as an uninterrupted run."""
    import json

    from minilora.cli import main
    from minilora.data import write_jsonl
    from minilora.io import load_safetensors

    rows = [{"context": f"Company {i} reports {'higher' if i % 2 else 'lower'} sales", "target":
             ("negative", "positive", "neutral")[i % 3]} for i in range(10)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    run = {"base_model": "minilora/tiny-sentiment-base", "dataset_path": "train.jsonl", "lora_r": 2,
           "quant_bits": 8, "learning_rate": 0.01, "num_epochs": 2, "batch_size": 3,
           "gradient_accumulation_steps": 2, "lora_dropout": 0.2, "seed": 1}
    (tmp_path / "cfg.json").write_text(json.dumps({"tiny": run}))
    args = ["train", "--config", str(tmp_path / "cfg.json"), "--run", "tiny", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "straight")]) == 0

    real = LlamaForCausalLM.loss_and_grads
    calls = {"n": 0}

    def interrupting(self, *a, **kw):
        out = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(LlamaForCausalLM, "loss_and_grads", interrupting)
    capsys.readouterr()
    out = str(tmp_path / "resumed")
    assert main(args + ["--out", out, "--checkpoint-every", "0"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resumable checkpoint saved to" in err[0] and out + ".ckpt" in err[0]
    assert not os.path.exists(out)
    monkeypatch.setattr(LlamaForCausalLM, "loss_and_grads", real)
    assert main(args + ["--out", out, "--resume", out + ".ckpt"]) == 0
    assert f"resumed from {out}.ckpt at step 2" in capsys.readouterr().out   # 2 of 4 steps were done
    a = load_safetensors(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_safetensors(os.path.join(out, "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert main(args + ["--out", out, "--resume", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
