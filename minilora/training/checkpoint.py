"""Resumable training checkpoints: one folder, written atomically, no pickle.

    <dir>/trainable.safetensors   the trainable parameters, keyed by their Hugging Face / PEFT names
    <dir>/optimizer.safetensors   AdamW moments, keyed 'm.<name>' and 'v.<name>'
    <dir>/rng.safetensors         only for CuPy: the raw cuRAND state of the dropout generator
    <dir>/state.json              everything else: optimizer and schedule step, data position
                                  (epoch, batch within the epoch), losses so far, the dropout
                                  generator's state (NumPy), the training config and what the
                                  run was made for (model config, LoRA settings, data fingerprint)

The folder is built under a temporary name and renamed into place (minilora.io.atomic.atomic_dir),
so a crash or Ctrl-C during a save leaves the previous checkpoint whole. Arrays that are not
finite are refused: a checkpoint is never overwritten with a bad state.

The dropout generator: a NumPy Generator's state is `rng.bit_generator.state`, a small dict of
integers (PCG64: two 128-bit integers), stored as JSON. CuPy's Generator (XORWOW) has no public
state; its state is a device array of cuRAND states (`rng.bit_generator._state`), which is copied
on the device at each optimizer step and to the host only when a checkpoint is written, as bytes.
Restoring it needs the same GPU model (its size depends on the number of multiprocessors); a
different size raises.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from minilora.backend import to_numpy
from minilora.errors import MiniLoraError
from minilora.io.atomic import atomic_dir, recover_if_missing, write_json

FORMAT = "minilora-train-checkpoint"
VERSION = 1
STATE = "state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"


class Checkpoint(NamedTuple):
    state: dict       # state.json
    params: dict      # {trainable name: host array}
    optimizer: dict   # {'m.<name>' / 'v.<name>': host array}
    rng: dict         # {'cupy_state': int8 host array} for a CuPy generator, else {}


# ---- the dropout generator ------------------------------------------------------------------
def rng_snapshot(rng):
    """A copy of the generator's state: a JSON-able dict (NumPy) or a device byte array (CuPy).

    The CuPy copy stays on the device (a device-to-device copy, ~12 MiB on an H200); only
    save_checkpoint moves it to the host, so taking a snapshot every optimizer step costs no transfer.
    """
    if type(rng).__module__.split(".")[0] == "cupy":
        bg = rng.bit_generator
        if not hasattr(bg, "_state"):
            raise MiniLoraError(f"cannot read the state of CuPy's {type(bg).__name__}; "
                                "resuming needs the dropout generator's state")
        return {"backend": "cupy", "bit_generator": type(bg).__name__, "state": bg._state.copy()}
    return {"backend": "numpy", **rng.bit_generator.state}


def rng_restore(rng, snap):
    """Set the generator's state from rng_snapshot's value (the same backend and bit generator)."""
    bg = rng.bit_generator
    if snap.get("backend") == "cupy":
        if type(rng).__module__.split(".")[0] != "cupy" or type(bg).__name__ != snap.get("bit_generator"):
            raise MiniLoraError(f"the checkpoint's dropout generator is CuPy's {snap.get('bit_generator')}; "
                                f"this model's is {type(bg).__module__}.{type(bg).__name__}")
        state = snap["state"]
        if tuple(bg._state.shape) != tuple(state.shape):
            raise MiniLoraError(f"the checkpoint's cuRAND state holds {state.size} bytes, this GPU's "
                                f"{bg._state.size}: resume on the same GPU model")
        bg._state[...] = _to_device(state, bg._state)
        return
    state = {k: v for k, v in snap.items() if k != "backend"}
    if type(rng).__module__.split(".")[0] == "cupy" or state.get("bit_generator") != type(bg).__name__:
        raise MiniLoraError(f"the checkpoint's dropout generator is numpy's {state.get('bit_generator')}; "
                            f"this model's is {type(bg).__module__}.{type(bg).__name__}")
    try:
        bg.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise MiniLoraError(f"invalid dropout generator state in the checkpoint ({e})") from None


def _to_device(host, like):
    import cupy

    return cupy.asarray(host, dtype=like.dtype)


# ---- writing and reading ----------------------------------------------------------------------
def _check_finite(arrays: dict, what: str):
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise MiniLoraError(f"refusing to save a checkpoint: {what} {name} holds non-finite values "
                                "(the previous checkpoint is kept)")


def save_checkpoint(folder, params: dict, optimizer: dict, state: dict, rng=None, overwrite: bool = False):
    """Write a checkpoint folder atomically; returns the folder.

    params: {trainable name: array}; optimizer: AdamW.state_dict(); state: JSON-able dict;
    rng: rng_snapshot(...) of the dropout generator (stored in state.json, or as bytes for CuPy: the
    one moment its device copy comes to the host).
    Non-finite parameters or moments raise MiniLoraError and leave any previous checkpoint as it was;
    so does a `folder` that exists and is not a checkpoint (unless overwrite=True).
    """
    from minilora.io import save_safetensors

    host_p = {k: np.ascontiguousarray(to_numpy(v)) for k, v in params.items()}
    host_o = {k: np.ascontiguousarray(to_numpy(v)) for k, v in optimizer.items()}
    _check_finite(host_p, "parameter")
    _check_finite(host_o, "optimizer moment")
    state = {"format": FORMAT, "version": VERSION, **state}
    rng_arrays = {}
    if rng is not None:
        if rng.get("backend") == "cupy":
            rng_arrays["cupy_state"] = np.ascontiguousarray(to_numpy(rng["state"])).view(np.int8).reshape(-1)
            state["rng"] = {k: v for k, v in rng.items() if k != "state"}
        else:
            state["rng"] = rng
    with atomic_dir(folder, "checkpoint", overwrite=overwrite) as tmp:
        save_safetensors(os.path.join(tmp, TRAINABLE), host_p, metadata={"format": "np"})
        save_safetensors(os.path.join(tmp, OPTIMIZER), host_o, metadata={"format": "np"})
        if rng_arrays:
            save_safetensors(os.path.join(tmp, RNG), rng_arrays, metadata={"format": "np"})
        write_json(os.path.join(tmp, STATE), state)
    return folder


def load_checkpoint(folder) -> Checkpoint:
    """Read a checkpoint folder written by save_checkpoint; one clear error for anything wrong."""
    from minilora.io import load_safetensors, read_json

    folder = os.fspath(folder)
    recover_if_missing(folder)                      # a save killed between its renames: finish it
    if not os.path.isdir(folder):
        raise MiniLoraError(f"{folder}: no such checkpoint folder")
    state_path = os.path.join(folder, STATE)
    state = read_json(state_path)
    if state.get("format") != FORMAT:
        raise MiniLoraError(f"{state_path}: not a minilora training checkpoint (format {state.get('format')!r})")
    if state.get("version") != VERSION:
        raise MiniLoraError(f"{state_path}: checkpoint version {state.get('version')!r} is not supported "
                            f"(this minilora reads version {VERSION})")
    for key, kind in (("step", int), ("epoch", int), ("batch", int), ("optimizer_step", int), ("losses", list),
                      ("train_config", dict), ("trainable", dict)):
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise MiniLoraError(f"{state_path}: field {key!r} is missing or invalid ({value!r})")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in state["losses"]):
        raise MiniLoraError(f"{state_path}: field 'losses' must be a list of finite numbers")
    evals = state.get("evals", [])
    if not isinstance(evals, list) or not all(isinstance(e, list) and len(e) == 2 and type(e[0]) is int
                                              and isinstance(e[1], dict) for e in evals):
        raise MiniLoraError(f"{state_path}: field 'evals' must be a list of [step, metrics] pairs")
    if "rng" in state and not isinstance(state["rng"], dict):
        raise MiniLoraError(f"{state_path}: field 'rng' must be an object")
    params = load_safetensors(os.path.join(folder, TRAINABLE))
    optimizer = load_safetensors(os.path.join(folder, OPTIMIZER))
    _check_arrays(folder, params, optimizer)
    rng = {}
    if isinstance(state.get("rng"), dict) and state["rng"].get("backend") == "cupy":
        rng = load_safetensors(os.path.join(folder, RNG))
        if "cupy_state" not in rng:
            raise MiniLoraError(f"{folder}: {RNG} lacks cupy_state")
    return Checkpoint(state, params, optimizer, rng)


def _check_arrays(folder, params: dict, optimizer: dict):
    """Every tensor finite (named if not); moments 'm.<name>' / 'v.<name>' of trainable names, shaped
    like their parameter, second moments >= 0."""
    for fname, arrays in ((TRAINABLE, params), (OPTIMIZER, optimizer)):
        for name, a in arrays.items():
            if a.dtype.kind != "f":
                raise MiniLoraError(f"{folder}: {fname}: {name} has dtype {a.dtype}; expected floats")
            if not np.all(np.isfinite(a)):
                raise MiniLoraError(f"{folder}: {fname}: {name} holds non-finite values; not a good checkpoint")
    for key, a in optimizer.items():
        kind, name = key[:2], key[2:]
        if kind not in ("m.", "v.") or name not in params:
            raise MiniLoraError(f"{folder}: {OPTIMIZER}: unexpected entry {key}")
        if a.shape != params[name].shape:
            raise MiniLoraError(f"{folder}: {OPTIMIZER}: {key} has shape {a.shape}, its parameter {params[name].shape}")
        if kind == "v." and np.any(a < 0):
            raise MiniLoraError(f"{folder}: {OPTIMIZER}: {key} holds negative second moments")


def checkpoint_rng(ckpt: Checkpoint):
    """The rng_snapshot stored in a checkpoint (None if it has none)."""
    snap = ckpt.state.get("rng")
    if not isinstance(snap, dict):
        return None
    if snap.get("backend") == "cupy":
        return {**snap, "state": ckpt.rng["cupy_state"]}
    return snap
