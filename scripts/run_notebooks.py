"""Execute the teaching notebooks in place, so a reader sees their outputs without running them.

    .venv/bin/python scripts/run_notebooks.py                  # every notebooks/*.ipynb
    .venv/bin/python scripts/run_notebooks.py notebooks/03_finetuning_tiny_llama.ipynb
    .venv/bin/python scripts/run_notebooks.py --check          # execute all, write nothing

Each notebook runs top to bottom in a fresh kernel of *this* interpreter (ipykernel's built-in
"python3" spec, so another Python's kernel installed elsewhere is never picked up), with notebooks/
as the working directory and one BLAS/OpenMP thread (OPENBLAS_NUM_THREADS=1 and friends), so the
outputs and the timings the notebooks compare do not depend on the machine's core count. A
failing cell or a failed assert stops that notebook and the script exits 1. Before writing,
volatile metadata is stripped (execution timestamps, kernel and Python versions), so re-running
changes only what the code printed or drew and the diffs stay reviewable. Each file is written
atomically (a temporary name in the same folder, then a rename; minilora.io.atomic).
tests/test_notebooks.py executes the notebooks through `execute` below.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
CELL_TIMEOUT_S = 600          # per cell; the notebooks aim for well under a minute in all
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def notebook_paths() -> list[Path]:
    """The notebooks in order: notebooks/NN_*.ipynb."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _kernel_manager():
    """A kernel manager bound to this interpreter's ipykernel, whatever kernelspecs exist."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    ksm = KernelSpecManager(kernel_dirs=[])          # no installed specs: ipykernel's native one
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    argv0 = km.kernel_spec.argv[0]
    if argv0 not in ("python", "python3", sys.executable):   # jupyter_client maps "python" to us
        raise RuntimeError(f"the python3 kernel would run {argv0}, not {sys.executable}")
    return km


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (IPython colours the tracebacks it reports)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def clean(nb):
    """Strip what changes from run to run but says nothing about the notebook's results."""
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for cell in nb.cells:
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            cell.metadata.pop(key, None)
    return nb


_CPU_PROBE = ("import os as _os\n"
              "print('__kernel_cpu_seconds__', sum(_os.times()[:2]), _os.environ.get('OPENBLAS_NUM_THREADS'))")


def execute(path, timeout: int = CELL_TIMEOUT_S):
    """Run the notebook at `path` top to bottom; returns (cleaned notebook, wall s, kernel CPU s).

    The file itself is not written. Kernel CPU seconds (user + system of the kernel process, read
    by one extra cell that is removed afterwards) do not depend on what else the machine runs,
    unlike wall time. Raises nbclient.exceptions.CellExecutionError on the first failing cell
    (its message holds the cell's traceback).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.fspath(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_CPU_PROBE, id="cpu-probe"))
    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, record_timing=False,
                            allow_errors=False,
                            resources={"metadata": {"path": os.fspath(NOTEBOOK_DIR)}})
    t0 = time.perf_counter()
    client.execute(env={**os.environ, **ONE_THREAD})
    seconds = time.perf_counter() - t0
    probe = nb.cells.pop()
    _, cpu, threads = probe.outputs[0]["text"].split()
    if threads != "1":
        raise RuntimeError(f"the kernel ran with OPENBLAS_NUM_THREADS={threads}, not 1")
    cpu = float(cpu)
    return clean(nb), seconds, cpu


def write(nb, path) -> None:
    """Validate and write the notebook atomically."""
    import nbformat

    from minilora.io.atomic import write_text

    nbformat.validate(nb)
    write_text(path, nbformat.writes(nb) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: notebooks/NN_*.ipynb)")
    parser.add_argument("--check", action="store_true", help="execute only; write nothing")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or notebook_paths()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"run_notebooks: error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    from nbclient.exceptions import CellExecutionError

    total = total_cpu = 0.0
    for path in paths:
        try:
            nb, seconds, cpu = execute(path)
        except CellExecutionError as e:
            print(f"run_notebooks: error: {path.name} failed:\n{strip_ansi(str(e))}", file=sys.stderr)
            return 1
        total, total_cpu = total + seconds, total_cpu + cpu
        if not args.check:
            write(nb, path)
        print(f"{path.name:<36} {seconds:6.1f} s wall {cpu:6.1f} s kernel CPU"
              + ("" if args.check else "  (written)"), flush=True)
    print(f"{'total':<36} {total:6.1f} s wall {total_cpu:6.1f} s kernel CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
