"""The minilora CLI: the small demo runs and proves its three claims; bad input exits 2 in one line."""
import subprocess
import sys

from minilora.cli import main
from minilora.runs.demo_linear import run_linear_demo


def test_linear_demo_claims():
    out = run_linear_demo(steps=150, log=lambda *_: None)
    assert out["zero_at_init"]
    assert out["losses"][-1] < 1e-3 * out["losses"][0]
    assert out["merge_err"] < 1e-12
    assert out["rel_delta_err"] < 1e-2
    assert out["trainable"] == 8 * (64 + 48)


def test_cli_bad_input_is_one_line_exit_2():
    for argv in (["demo-linear", "--steps", "0"], ["no-such-command"], ["demo-linear", "--steps", "x"]):
        proc = subprocess.run([sys.executable, "-m", "minilora", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, argv
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "error" in proc.stderr


def test_cli_demo_linear_exit_0(capsys):
    assert main(["demo-linear", "--steps", "100"]) == 0
    assert "zero at init" in capsys.readouterr().out
