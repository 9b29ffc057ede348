"""Write the API of a pinned CuPy release as JSON: its names, and the parameters of each callable.

    python scripts/cupy_api.py                       # downloads cupy-cuda12x==14.2.0, writes the list
    python scripts/cupy_api.py --wheel cupy_cuda12x-14.2.0-cp311-...whl -o tests/data/cupy_api.json

The wheel (`pip download cupy-cuda12x==VERSION --no-deps`, unless --wheel names one) is unpacked
into a temporary folder. The names come from the release's Python sources: every public name that
cupy/__init__.py, cupy/random/__init__.py, cupy/linalg/__init__.py and cupyx/__init__.py bind
(`from x import name`, assignments, defs), read with ast. The parameters need the compiled parts
too, so a subprocess imports CuPy from the unpacked wheel (importing needs no GPU and no CUDA
libraries; only running a kernel does) and records, for each name, inspect.signature where Python
defines it, else the signature line that Cython puts at the top of each docstring (ufuncs, ndarray
and Generator methods). tests/cupy_standin.py builds its strict CuPy stand-in from this file.

A parameter list is written as a string, "a, /, axis, dtype, *, keepdims" ('/' ends the positional-
only ones, '*' starts the keyword-only ones, '*args' / '**kwargs' as such); "?" where no signature
can be read; "value", "type", "class" or "module" for names that are not functions.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

SOURCES = {"cupy": "cupy/__init__.py", "cupy.random": "cupy/random/__init__.py",
           "cupy.linalg": "cupy/linalg/__init__.py", "cupyx": "cupyx/__init__.py"}
CLASSES = ("cupy.ndarray", "cupy.ufunc", "cupy.random.Generator", "cupy.random.XORWOW")
# attributes of an instance that no class body shows (set in __init__ of compiled code), read in
# the release's cupy/random/_bit_generator.pyx: `self._state = cupy.zeros(b_size, dtype=numpy.int8)`
INSTANCE_ATTRS = {"cupy.random.XORWOW": {"_state": "value"}}
CUDA_NAMES = {"cupy.cuda": ("Stream", "Device", "is_available"),
              "cupy.cuda.runtime": ("getDeviceCount", "getDeviceProperties", "runtimeGetVersion")}


def bound_names(source: str) -> list:
    """Public names a module's source binds at top level (imports, assignments, defs, classes)."""
    names = set()

    def visit(stmts):
        for node in stmts:
            if isinstance(node, ast.ImportFrom):
                names.update((a.asname or a.name) for a in node.names if a.name != "*")
            elif isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.If, ast.Try)):                # version-guarded imports
                for part in (node.body, node.orelse, getattr(node, "finalbody", []),
                             *[h.body for h in getattr(node, "handlers", [])]):
                    visit(part)

    visit(ast.parse(source).body)
    return sorted(n for n in names if not n.startswith("_"))


# Runs inside the subprocess with the unpacked wheel first on sys.path: prints the JSON body.
PROBE = r'''
import inspect, json, re, sys, types
import numpy, cupy, cupy.random, cupy.linalg, cupyx, cupy.cuda, cupy.cuda.runtime
names = json.loads(sys.argv[1]); classes = json.loads(sys.argv[2]); cuda = json.loads(sys.argv[3])

def spec_of(params):
    out, pos_only_done, kw_only = [], False, False
    for p in params:
        if p.kind is p.POSITIONAL_ONLY:
            out.append(p.name); continue
        if not pos_only_done and out and all(q.kind is q.POSITIONAL_ONLY for q in params[:len(out)]):
            out.append("/")
        pos_only_done = True
        if p.kind is p.VAR_POSITIONAL:
            out.append("*" + p.name); kw_only = True
        elif p.kind is p.KEYWORD_ONLY:
            if not kw_only:
                out.append("*"); kw_only = True
            out.append(p.name)
        elif p.kind is p.VAR_KEYWORD:
            out.append("**" + p.name)
        else:
            out.append(p.name)
    if out and all(p.kind is p.POSITIONAL_ONLY for p in params):
        out.append("/")
    return ", ".join(out)

def from_doc(obj):
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    if not doc:
        return None
    m = re.match(r"^[\w.]*\((.*)\)\s*(->.*)?$", doc[0].strip())
    if not m:
        return None
    text = m.group(1).replace("\\*", "*").replace("[,", ",").replace("]", "")
    text = re.sub(r"=<[^>]*>", "=None", text)
    # Cython's typed parameters ("int axis=-1", "_ndarray_base b"): keep the name only
    text = ", ".join(re.sub(r"^([A-Za-z_][\w.]*)\s+(\**[A-Za-z_]\w*)", r"\2", piece.strip())
                     for piece in text.split(","))
    try:
        fn = compile("def f(" + text + "): pass", "<sig>", "exec")
    except SyntaxError:
        return None
    ns = {"numpy": numpy, "cupy": cupy}
    try:
        exec(fn, ns)
    except Exception:
        return None
    return list(inspect.signature(ns["f"]).parameters.values())

def describe(obj, method=False):
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        return "type" if issubclass(obj, (numpy.generic,)) else "class"
    if isinstance(obj, numpy.dtype):
        return "value"
    if not callable(obj):
        return "value"
    params = None
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        params = from_doc(obj)
    if params is None:
        return "?"
    if method and params and params[0].name == "self":
        params = params[1:]
    return spec_of(params)

out = {"release": cupy.__version__, "modules": {}, "classes": {}}
for mod, ns in names.items():
    m = sys.modules[mod]
    out["modules"][mod] = {n: describe(getattr(m, n)) for n in ns if hasattr(m, n)}
for mod, ns in cuda.items():
    m = sys.modules[mod]
    out["modules"][mod] = {n: describe(getattr(m, n)) for n in ns if hasattr(m, n)}
for cls in classes:
    mod, _, name = cls.rpartition(".")
    c = getattr(sys.modules[mod], name)
    attrs = {}
    for n in dir(c):
        if n.startswith("_") and not (n.startswith("__") and n.endswith("__")):
            continue
        if n in ("__doc__", "__module__", "__pyx_vtable__", "__slots__"):
            continue
        raw = inspect.getattr_static(c, n)
        if type(raw).__name__ in ("getset_descriptor", "property", "member_descriptor"):
            attrs[n] = "value"
        else:
            attrs[n] = describe(getattr(c, n), method=True)
    out["classes"][cls] = attrs
print(json.dumps(out))
'''


def download(requirement: str, folder: str) -> str:
    """pip download one wheel (no dependencies) into folder; returns its path."""
    os.makedirs(folder, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary", ":all:",
                    "-d", folder, "-q"], check=True)
    return os.path.join(folder, next(f for f in os.listdir(folder) if f.endswith(".whl")))


def extras_of(wheel: str) -> dict:
    """The wheel's extras and what each requires (METADATA's Requires-Dist ...; extra == "name")."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist: ") and "; extra ==" in line:
                req, extra = line[len("Requires-Dist: "):].split("; extra ==")
                out.setdefault(extra.strip().strip('"'), []).append(req.strip())
    return out


def requirement_of(wheel: str, package: str) -> str:
    """The wheel's own requirement on package (Requires-Dist), e.g. 'cuda-pathfinder==1.*,>=1.3.4'."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist: " + package) and "extra ==" not in line:
                return line.split(": ", 1)[1].replace(" ", "")
    return package


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", default="14.2.0", help="the cupy-cuda12x release to pin")
    p.add_argument("--wheel", help="a downloaded cupy-cuda12x wheel (skips the download)")
    p.add_argument("-o", "--output", default="tests/data/cupy_api.json", help="where the JSON goes")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = a.wheel or download(f"cupy-cuda12x=={a.version}", os.path.join(tmp, "cupy"))
        # importing cupy 14 needs cuda-pathfinder (pure Python), which finds CUDA's libraries lazily
        finder = download(requirement_of(wheel, "cuda-pathfinder"), os.path.join(tmp, "finder"))
        for w in (wheel, finder):
            with zipfile.ZipFile(w) as z:
                z.extractall(os.path.join(tmp, "site"))
        names = {mod: bound_names(open(os.path.join(tmp, "site", path)).read()) for mod, path in SOURCES.items()}
        env = dict(os.environ, PYTHONPATH=os.path.join(tmp, "site"))
        res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(names), json.dumps(list(CLASSES)),
                              json.dumps(CUDA_NAMES)], env=env, capture_output=True, text=True, cwd=tmp)
        if res.returncode:
            sys.exit(f"importing CuPy from {wheel} failed:\n{res.stderr[-2000:]}")
        api = json.loads(res.stdout)
        with open(wheel, "rb") as f:
            api["wheel"] = {"name": os.path.basename(wheel), "sha256": hashlib.sha256(f.read()).hexdigest(),
                            "extras": extras_of(wheel)}
    for cls, attrs in INSTANCE_ATTRS.items():
        api["classes"][cls].update(attrs)
    if api["release"] != a.version and not a.wheel:
        sys.exit(f"asked for {a.version}, the wheel is {api['release']}")
    counts = {m: len(v) for m, v in api["modules"].items()} | {c: len(v) for c, v in api["classes"].items()}
    unknown = sum(v == "?" for d in (*api["modules"].values(), *api["classes"].values()) for v in d.values())
    api = {"release": api["release"], "wheel": api["wheel"], "modules": api["modules"], "classes": api["classes"]}
    with open(a.output, "w") as f:
        f.write(_dump(api))
    print(f"CuPy {api['release']}: {counts}; {unknown} callables without a readable signature -> {a.output}")


def _dump(api: dict) -> str:
    """JSON with one name per line, so a new release's list diffs cleanly."""
    lines = ["{", f'"release": {json.dumps(api["release"])},', f'"wheel": {json.dumps(api["wheel"])},']
    for key in ("modules", "classes"):
        lines.append(f'"{key}": {{')
        groups = list(api[key].items())
        for i, (group, entries) in enumerate(groups):
            lines.append(f"  {json.dumps(group)}: {{")
            items = sorted(entries.items())
            lines += [f"    {json.dumps(n)}: {json.dumps(v)}" + ("," if j < len(items) - 1 else "")
                      for j, (n, v) in enumerate(items)]
            lines.append("  }" + ("," if i < len(groups) - 1 else ""))
        lines.append("}" + ("," if key == "modules" else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
