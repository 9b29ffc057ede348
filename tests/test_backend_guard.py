"""Guards that catch GPU bugs on a CPU-only machine.

1. No compute module imports numpy: they take the array module from their inputs
   (`xp = array_module(x)`), so passing CuPy arrays runs them on the GPU. Host-side modules
   (file formats, data preparation, CLIs, benchmarks, reports) are listed with the reason.
2. The CuPy differences that bite are handled explicitly: out-of-range ids raise (CuPy wraps
   them), duplicate-index gradients accumulate (CuPy's assignment through duplicates is
   undefined), reductions stay 0-d arrays until a deliberate host read.
"""
import ast
import pathlib

import numpy as np
import pytest

import minilora
from minilora.backend import scatter_add_rows
from minilora.errors import MiniLoraError
from minilora.layers.embedding import embedding_backward, embedding_forward
from minilora.layers.loss import cross_entropy_forward

PKG = pathlib.Path(minilora.__file__).parent

# host-side modules: they may import numpy (each says why)
HOST = {
    "backend.py": "the one place that maps arrays to their module",
    "io/hf.py": "files are host NumPy arrays (safetensors)",
    "io/hf_config.py": "config.json reading",
    "io/peft.py": "files are host NumPy arrays (safetensors)",
    "training/checkpoint.py": "files are host NumPy arrays (safetensors)",
    "data/batching.py": "tokenized batches are built on the host, then moved with asarray",
    "data/sentiment.py": "the data generator draws with a host RNG",
    "data/jsonl.py": "file format",
    "data/tokenizer.py": "text <-> ids on the host",
    "runs/demo.py": "a CLI-level driver",
    "runs/demo_linear.py": "a CLI-level driver",
    "runs/real_demo.py": "a CLI-level driver",
    "quant/gguf_blocks.py": "quantizing runs the gguf package's reference quantizer on the host; unpacking is xp",
    "quant/nf4.py": "the 16-entry code table and its byte lookup are built on the host, then moved with xp.asarray",
    "bench/harness.py": "the benchmark harness",
    "bench/torch_ref.py": "the PyTorch reference for the benchmark",
    "bench/tools.py": "the benchmark's timers and machine description",
    "bench/models.py": "the benchmark's host-built batches and configs",
    "exercises.py": "the learner's checkers: float64 NumPy references and finite differences",
    "io/gguf_adapter.py": "GGUF adapter files are written from host arrays",
    "io/gguf.py": "GGUF files are read on the host (the gguf package dequantizes with NumPy)",
    "analysis/report.py": "writes tables and plots from host copies",
    "analysis/plots.py": "matplotlib needs host arrays",
}


def _imports_numpy(tree) -> list:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] == "numpy"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "numpy":
            bad.append(node.module)
        elif isinstance(node, ast.Name) and node.id in ("np", "numpy"):
            bad.append(node.id)
    return bad


def compute_modules():
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in HOST or rel.startswith(("cli/", "bench/")) or rel in ("__main__.py",):
            continue
        out.append(rel)
    return out


def test_guard_covers_the_compute_modules():
    mods = compute_modules()
    for must in ("layers/linear.py", "layers/lora.py", "layers/attention.py", "model.py", "adapters/lora.py",
                 "training/optim.py", "quant/absmax.py", "training/loop.py", "gradcheck.py"):
        assert must in mods


@pytest.mark.parametrize("rel", compute_modules())
def test_compute_module_never_uses_numpy_directly(rel):
    tree = ast.parse((PKG / rel).read_text(), filename=rel)
    assert _imports_numpy(tree) == [], f"{rel} uses numpy directly; take xp = array_module(x) instead"


def test_guard_detects_a_direct_numpy_call():
    src = "from ..backend import array_module\nimport numpy as np\ndef f(x):\n    return np.zeros(3)\n"
    assert _imports_numpy(ast.parse(src)) == ["numpy", "np"]


def test_out_of_range_ids_raise_instead_of_wrapping():
    w = np.zeros((5, 2))
    for bad in (5, -1):
        with pytest.raises(MiniLoraError, match="out of range"):
            embedding_forward(np.array([[0, bad]]), w)
    with pytest.raises(MiniLoraError, match="out of range"):
        cross_entropy_forward(np.zeros((2, 5)), np.array([1, 7]))


def test_duplicate_indices_accumulate():
    ids = np.array([[1, 1, 3, 1]])
    out, cache = embedding_forward(ids, np.zeros((4, 2)))
    dw = embedding_backward(np.ones((1, 4, 2)), cache)
    assert dw[1].tolist() == [3.0, 3.0] and dw[3].tolist() == [1.0, 1.0]
    t = np.zeros((3, 1))
    scatter_add_rows(t, np.array([2, 2, 0]), np.ones((3, 1)))
    assert t[:, 0].tolist() == [1.0, 0.0, 2.0]


def test_loss_stays_an_array_scalar_of_the_logits_dtype():
    # NumPy reductions give 0-d scalars, CuPy's give 0-d device arrays; either is read with float()
    loss, _ = cross_entropy_forward(np.zeros((2, 3), dtype=np.float32), np.array([0, 1]))
    assert loss.shape == () and loss.dtype == np.float32
    assert float(loss) == pytest.approx(np.log(3), rel=1e-6)
