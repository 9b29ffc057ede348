"""Kill tests of the atomic writer (minilora.io.atomic): a child process saves an adapter over an
existing one and is killed with SIGKILL at a chosen step - while building the temporary folder,
around each rename (including between the two renames, when the destination is missing), while
removing the old copy - or at random moments of a save loop. Afterwards the reader finds the old
complete adapter or the new complete one (never a mix, never nothing), and the next write leaves no
temporary folder behind.
"""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilora.adapters import LoraConfig, add_lora
from minilora.config import LlamaConfig
from minilora.io.atomic import leftovers, write_json
from minilora.io.peft import read_adapter_factors, save_adapter
from minilora.model import LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
KEY = "model.layers.0.self_attn.q_proj"

CHILD = r"""
import os, signal, sys
import numpy as np
from minilora.adapters import LoraConfig, add_lora
from minilora.config import LlamaConfig
from minilora.io import atomic
from minilora.io.peft import save_adapter
from minilora.model import LlamaForCausalLM

dest, point, scales = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(",")]
real_replace, real_remove, files = os.replace, atomic.remove_path, [0]

def kind(src, dst):
    src, dst = str(src), str(dst)
    if src.endswith(".tmp") and dst.endswith(".new"):
        return "seal"                    # the temporary folder is complete
    if dst.endswith(".old"):
        return "aside"                   # the old folder moved aside: the destination is missing
    if src.endswith(".new"):
        return "install"                 # the new folder in place
    files[0] += 1
    return f"file{files[0]}"             # a file inside the temporary folder

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst):
    k = kind(src, dst)
    if point == "before-" + k:
        die()
    real_replace(src, dst)
    if point == "after-" + k:
        die()

def remove(p):
    if point == "mid-remove-old" and str(p).endswith(".old"):
        os.unlink(os.path.join(p, sorted(os.listdir(p))[0]))
        die()
    real_remove(p)

os.replace, atomic.remove_path = replace, remove
cfg = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
m = LlamaForCausalLM.init(cfg, seed=0)
add_lora(m, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
print("ready", flush=True)
i = 0
while True:
    for n in m.adapters.param_names():
        m.params[n] = np.full_like(m.params[n], scales[i % len(scales)])
    save_adapter(m, dest)
    i += 1
    if point != "loop":
        break
"""


def _adapter(value: float):
    cfg = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    m = LlamaForCausalLM.init(cfg, seed=0)
    add_lora(m, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for n in m.adapters.param_names():
        m.params[n] = np.full_like(m.params[n], value)
    return m


def _child(dest, point, scales):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(dest), point, ",".join(map(str, scales))],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _value(dest) -> float:
    """The one value every factor of the adapter at dest holds (a mix of two saves fails here)."""
    af = read_adapter_factors(dest)                   # the reader finishes an interrupted write first
    values = {float(x) for a, b, _ in af.modules.values() for x in np.concatenate([a.ravel(), b.ravel()])}
    assert len(values) == 1, f"a torn adapter: {sorted(values)}"
    return values.pop()


# point -> which copy the reader must find: the old one (1.0) or the new one (2.0)
POINTS = {"before-file1": 1.0, "before-file2": 1.0, "before-seal": 1.0, "after-seal": 1.0,
          "after-aside": 2.0, "after-install": 2.0, "mid-remove-old": 2.0}


@pytest.mark.parametrize("point,expect", POINTS.items())
def test_a_kill_at_each_step_leaves_a_whole_copy(tmp_path, point, expect):
    dest = tmp_path / "adapter"
    save_adapter(_adapter(1.0), dest)
    proc = _child(dest, point, [2.0])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"kill point {point} not reached: {proc.returncode} {err}"
    if point == "after-aside":
        assert not dest.exists()                     # between the renames: only the leftovers hold it
    assert _value(dest) == expect
    save_adapter(_adapter(3.0), dest)                # the next write cleans up after the interrupted one
    assert os.listdir(tmp_path) == ["adapter"] and _value(dest) == 3.0


def test_random_kills_in_a_save_loop_never_lose_the_adapter(tmp_path):
    """The issue's random-kill run, smaller: a loop saving 2.0, 3.0, 2.0, ... killed at random times."""
    dest = tmp_path / "adapter"
    save_adapter(_adapter(1.0), dest)
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        proc = _child(dest, "loop", [2.0, 3.0])
        assert proc.stdout.readline().strip() == "ready"
        try:
            proc.wait(timeout=rng.uniform(0.02, 0.4))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        value = _value(dest)
        assert value in (1.0, 2.0, 3.0)
        seen.add(value)
        assert len(os.listdir(tmp_path)) <= 3        # at most this kill's .tmp / .new / .old
    save_adapter(_adapter(4.0), dest)
    assert os.listdir(tmp_path) == ["adapter"] and _value(dest) == 4.0
    assert seen & {2.0, 3.0}, seen                   # the loop did save between the kills


def test_leftovers_of_killed_file_writes_do_not_pile_up(tmp_path):
    """Five writers of one JSON file killed mid-write (os._exit), then one that finishes: one file, no .tmp."""
    p = tmp_path / "summary.json"
    write_json(p, {"v": 0})
    code = ("import os, sys\nfrom minilora.io.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    open(tmp, 'w').write('{\"v\": ')\n"
            "    os._exit(9)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(5):
        assert subprocess.run([sys.executable, "-c", code, str(p)], cwd=ROOT, env=env).returncode == 9
        assert p.read_text() == '{\n  "v": 0\n}\n'
    assert len(leftovers(p)[".tmp"]) == 1            # each write removed the one before it
    write_json(p, {"v": 1})
    assert os.listdir(tmp_path) == ["summary.json"] and '"v": 1' in p.read_text()
