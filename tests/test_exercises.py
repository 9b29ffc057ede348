"""The exercises (notebooks/exercises/) run both ways, so none can rot.

Each exercise notebook has one stub cell (tag "stub") where the learner writes a function, and
one check cell (tag "check") that grades it with a minilora.exercises checker and binds
`ok, err`. Every notebook is run twice, its code cells in order in one namespace (what a kernel
does, without a kernel's start-up cost): with the reference solution from
notebooks/exercises/solutions.py put in place of the stub, the check must print PASS and set ok;
with the stub as committed, it must print FAIL and clear ok. One notebook also runs in a real
Jupyter kernel through scripts/run_notebooks.py, to show the files are valid notebooks.
"""
import ast
import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EX_DIR = ROOT / "notebooks" / "exercises"
EXERCISES = sorted(EX_DIR.glob("[0-9][0-9]_*.ipynb"))
TOPICS = {"01_lora_backward": "check_lora_backward", "02_merge_unmerge": "check_merge",
          "03_rmsnorm_backward": "check_rmsnorm_backward", "04_rope_backward": "check_rope_backward",
          "05_attention_backward": "check_attention_backward", "06_gqa_param_count": "check_param_count"}


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _tagged(nb, tag):
    return [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def _solution_sources() -> dict:
    """{function name: its source text} from solutions.py."""
    text = (EX_DIR / "solutions.py").read_text(encoding="utf-8")
    return {node.name: ast.get_source_segment(text, node) for node in ast.parse(text).body
            if isinstance(node, ast.FunctionDef)}


def _with_solution(nb):
    """A copy of nb whose stub cell defines the reference solution's functions instead."""
    nb = json.loads(json.dumps(nb))
    solutions = _solution_sources()
    for cell in _tagged(nb, "stub"):
        names = [n.name for n in ast.parse("".join(cell["source"])).body if isinstance(n, ast.FunctionDef)]
        assert names and all(n in solutions for n in names), names
        cell["source"] = "\n\n\n".join(solutions[n] for n in names)
    return nb


def _run(nb, monkeypatch):
    """Execute the code cells in order in one namespace from notebooks/exercises; (namespace, stdout)."""
    monkeypatch.chdir(EX_DIR)
    ns, out = {"__name__": "__main__"}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"<{cell.get('id')}>", "exec"), ns)   # noqa: S102
    return ns, out.getvalue()


def test_six_exercises_one_per_topic():
    assert {p.stem: TOPICS[p.stem] for p in EXERCISES} == TOPICS


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_exercise_notebook_layout(path):
    """A stub, a check with the topic's checker, collapsed hints, and no outputs (the learner runs it)."""
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(_tagged(nb, "stub")) == 1 and len(_tagged(nb, "check")) == 1
    stub = "".join(_tagged(nb, "stub")[0]["source"])
    assert "YOUR CODE HERE" in stub and "NotImplementedError" in stub
    check = "".join(_tagged(nb, "check")[0]["source"])
    assert check.startswith(f"ok, err = {TOPICS[path.stem]}(")
    hints = [c for c in nb["cells"] if c["metadata"].get("jupyter", {}).get("source_hidden")]
    assert len(hints) >= 2 and all(c["cell_type"] == "markdown" for c in hints)
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert any("$" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_reference_solution_passes_the_check(path, monkeypatch):
    ns, out = _run(_with_solution(_load(path)), monkeypatch)
    assert ns["ok"] is True and ns["err"] < 1e-6, out
    assert ": PASS" in out and "FAIL" not in out


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_stub_fails_the_check(path, monkeypatch):
    ns, out = _run(_load(path), monkeypatch)
    assert ns["ok"] is False and ns["err"] == math.inf, out
    assert ": FAIL" in out and "NotImplementedError" in out and "PASS" not in out


def test_a_wrong_answer_fails_with_its_error(monkeypatch):
    """Not only a missing answer: a gradient off by a factor is caught, and its error is reported."""
    nb = _with_solution(_load(EX_DIR / "01_lora_backward.ipynb"))
    stub = _tagged(nb, "stub")[0]
    stub["source"] += "\n\n\n_right = lora_backward\n\n\ndef lora_backward(*args):\n" \
                      "    dX, dA, dB = _right(*args)\n    return dX, dA, 2 * dB\n"
    ns, out = _run(nb, monkeypatch)
    assert ns["ok"] is False and 0.4 < ns["err"] < 0.6, out
    assert "dB         relative error 5.00e-01" in out


def test_exercise_runs_in_a_jupyter_kernel(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    copy = tmp_path / "05_attention_backward.ipynb"
    copy.write_text(json.dumps(_with_solution(_load(EX_DIR / copy.name))), encoding="utf-8")
    nb, _wall, _cpu = runner.execute(copy)
    check = _tagged(nb, "check")[0]
    text = "".join(o.get("text", "") for o in check["outputs"])
    assert "attention backward (GQA): PASS" in text, text
