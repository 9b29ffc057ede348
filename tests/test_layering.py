"""The architecture is enforced: every module imports only from its own layer or the layers below it,
in the order written in docs/architecture.md, and the import graph has no cycle.

The order (bottom to top) is LAYERS below; a module's layer is its sub-package (minilora/io/...)
or, for a top-level file, its name. Imports inside functions count too: a lazy import is still a
dependency. A `__main__` module (`python -m minilora.bench`) is an entry point, at the top with the
command line. param_calc stands beside minilora: pure Python, it may use only the standard-library
modules of minilora listed in PARAM_CALC_MAY_USE; minilora.config uses param_calc.shapes (the one
shape table), and the drivers (runs, cli) may call param_calc's API.
"""
import ast
import pathlib

import pytest

import minilora

PKG = pathlib.Path(minilora.__file__).parent
ROOT = PKG.parent

LAYERS = [
    ("backend", "errors", "gradcheck"),   # array module from the inputs; error types; the one checker
    ("layers",),                          # forward/backward pairs
    ("quant",),                           # frozen-base formats
    ("config",),                          # LlamaConfig
    ("model", "decoder", "projections"),  # LlamaForCausalLM: one decoder layer, projections, the adapter state
    ("adapters",),                        # LoRA by PEFT's rules: add/merge/unmerge, named, weighted
    ("io",),                              # atomic writes, safetensors, HF folders, PEFT files, GGUF
    ("data",),                            # tokenizers, chat templates, data sets, batching
    ("inference",),                       # generation, label-choice evaluation
    ("training",),                        # AdamW, the loop, checkpoints
    ("analysis", "exercises"),            # the paper's section 7; the learners' checkers
    ("bench",),                           # the benchmark
    ("runs",),                            # run configs, the model registry, recipes, the demos
    ("cli", "__main__", "__init__"),      # the commands; the package's lazy public names
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
PARAM_CALC_MAY_USE = {"minilora.errors", "minilora.io.atomic", "minilora.io.jsonfile", "minilora.io.console",
                      "minilora.io.destination", "minilora.runs.finlora", "minilora.runs.registry"}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "param_calc":
        return -1 if module == "param_calc.shapes" else len(LAYERS)
    if parts[-1] == "__main__":
        return LEVEL["__main__"]
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LEVEL:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS and to docs/architecture.md")
    return LEVEL[key]


def imports_of(path: pathlib.Path) -> list:
    """(line, imported module) for every `import minilora...` / `from minilora... import` / param_calc."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names if _is_module(n)]
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "." * node.level + (node.module or "")))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if _is_module(a.name)]
    return out


def _is_module(name: str) -> bool:
    if not name.startswith(("minilora", "param_calc")):
        return False
    rel = pathlib.Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def sources():
    return sorted(PKG.rglob("*.py")) + sorted((ROOT / "param_calc").rglob("*.py"))


def upward_imports(files) -> list:
    bad = []
    for path in files:
        src = module_name(path)
        for line, target in imports_of(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.startswith("."):
                bad.append(f"{where} relative import {target!r}: use minilora.<layer>.<module>")
            elif src.startswith("param_calc") and target.startswith("minilora"):
                if target not in PARAM_CALC_MAY_USE:
                    bad.append(f"{where} param_calc imports {target}, which is not standard-library-only")
            elif src.startswith("minilora") and target.startswith("param_calc"):
                if target != "param_calc.shapes" and layer_of(src) < LEVEL["runs"]:
                    bad.append(f"{where} {src} imports {target}: below the drivers only param_calc.shapes")
            elif src.startswith("minilora") and layer_of(target) > layer_of(src):
                bad.append(f"{where} {src} (layer {LAYERS[layer_of(src)][0]}) imports {target} "
                           f"(layer {LAYERS[layer_of(target)][0]}), a layer above it")
    return bad


def test_every_module_imports_only_from_below():
    assert upward_imports(sources()) == []


def test_the_layering_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check is not vacuous: model.py importing the training loop is reported."""
    fake = PKG / "model.py"
    text = fake.read_text() + "\n\ndef _oops():\n    from minilora.training.loop import fit  # noqa\n"
    copy = tmp_path / "model.py"
    copy.write_text(text)
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: text if self == fake else
                        _read(self, *a, **k))
    bad = upward_imports([fake])
    assert len(bad) == 1 and "minilora.training.loop" in bad[0] and "layer model" in bad[0]


_read = pathlib.Path.read_text


def test_param_calc_may_use_modules_are_standard_library_only():
    for name in PARAM_CALC_MAY_USE:
        path = ROOT / pathlib.Path(*name.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & {"numpy", "cupy", "safetensors", "gguf", "tokenizers", "matplotlib"}, (name, mods)


def _graph() -> dict:
    graph = {}
    for path in sources():
        src = module_name(path)
        graph.setdefault(src, set())
        for _, target in imports_of(path):
            if not target.startswith(".") and target != src:
                graph[src].add(target)
    return graph


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):        # a package importing its own submodules (re-exports)
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("layer", [n for names in LAYERS for n in names if n not in ("__main__", "__init__")])
def test_every_layer_exists_and_is_in_the_architecture_page(layer):
    assert (PKG / layer).is_dir() or (PKG / f"{layer}.py").is_file(), layer
    page = (ROOT / "docs" / "architecture.md").read_text()
    block = page.split("```text")[1].split("```")[0]          # the layer list, bottom to top
    firsts = [w.strip(",/") for line in block.splitlines() for w in line[:19].split()]   # the names column
    assert layer in firsts, f"{layer} is missing from the layer list in docs/architecture.md"
