"""The documentation site: it builds strictly, its figures equal what the code prints, its links lead
somewhere, and the claims it makes that no other test pins are pinned here.

- test_docs_build_strict runs `mkdocs build --strict` (skipped without the `docs` extra) and prints
  the build time; then every relative link and anchor in the built HTML must resolve.
- The number checks need no mkdocs: every figure on parameters.md must be printed by one of the
  param-calc commands shown on that page, and each row of reproduce.md must match its own command.
"""
from __future__ import annotations

import contextlib
import html
import importlib.util
import io
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SEED_CANDIDATES = [Path(os.environ["MINILORA_SEED_DIR"]) if os.environ.get("MINILORA_SEED_DIR") else None,
                   ROOT.parent / "shared" / "seed", ROOT / "shared" / "seed"]


def load_hooks():
    spec = importlib.util.spec_from_file_location("minilora_docs_hooks", DOCS / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- numbers -----------------------------------------------------------------------------------
# A number: 1,234,567 / 6,332.7301 / 70.6 / 8192. Not inside identifiers (test_x_6337, r8, lora_A):
# no letter, digit, underscore, dot or comma right before it. Units may follow (70.6B, 9,251x).
NUMBER = re.compile(r"(?<![A-Za-z_\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![A-Za-z_\d.,])\d+(?:\.\d+)?")


def numbers(text: str) -> list:
    """The numbers in text, commas removed ('65{,}536' in LaTeX counts as 65,536)."""
    text = text.replace("{,}", ",")
    return [m.group(0).replace(",", "") for m in NUMBER.finditer(text)]


def significant(tokens) -> list:
    """Numbers worth checking: a decimal point, or four digits or more."""
    return [t for t in tokens if "." in t or len(t) >= 4]


@lru_cache(maxsize=None)
def param_calc_output(command: str) -> str:
    """What `param-calc ...` prints, run in-process through its real entry point."""
    from param_calc.cli import main

    argv = shlex.split(command)
    assert argv[0] == "param-calc", command
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv[1:])
    assert code == 0, f"{command} exited {code}"
    return buf.getvalue()


def strip_markup(markdown: str) -> str:
    """Page text without link targets, heading ids and test names (they hold no figures)."""
    markdown = re.sub(r"\]\([^)]*\)", "]", markdown)               # [text](target)
    markdown = re.sub(r"\{#[\w-]+\}", "", markdown)                 # {#anchor}
    markdown = re.sub(r"tests/test_\w+\.py(::\w+)?", "", markdown)
    return markdown


def page_commands(markdown: str) -> list:
    return [line[2:].strip() for line in markdown.splitlines() if line.startswith("$ param-calc")]


def test_number_extraction():
    assert numbers("6,332.7x and 70.6B / 11.14M, 65{,}536, r8, test_x_6337, -4.3 (+41.2%)") == \
        ["6332.7", "70.6", "11.14", "65536", "4.3", "41.2"]
    assert significant(["4", "240", "8192", "0.0158"]) == ["8192", "0.0158"]


def test_parameter_page_numbers_are_printed_by_param_calc():
    text = (DOCS / "parameters.md").read_text(encoding="utf-8")
    commands = page_commands(text)
    assert len(commands) >= 4, "parameters.md should show the param-calc commands its figures come from"
    printed = set()
    for cmd in commands:
        printed.update(numbers(param_calc_output(cmd)))
    body = "\n".join(line for line in strip_markup(text).splitlines() if not line.startswith("$ "))
    quoted = significant(numbers(body))
    assert len(quoted) >= 60, f"only {len(quoted)} figures found on parameters.md: is the parser broken?"
    missing = sorted(set(quoted) - printed, key=quoted.index)
    assert not missing, f"parameters.md quotes figures that no command on it prints: {missing}"
    # the headline figures, named, so a change of parser cannot quietly drop them
    for fig in ("65536", "36864", "139264", "11141120", "70553706496", "6332.7", "6337.5224",
                "15728640", "4587520", "41.2"):
        assert fig in quoted and fig in printed, fig


# ---- reproduce.md --------------------------------------------------------------------------------
ROW = re.compile(r"^\|\s*([SP]\d+)\s*\|(.*)\|\s*$")


def reproduce_rows() -> list:
    """[(id, figure, published, minilora, command)] from reproduce.md: a row's command is its last
    cell when it has one (`pytest ...`), else the last `$ command` shown above its table."""
    rows, command = [], None
    for line in (DOCS / "reproduce.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("$ "):
            command = line[2:].strip()
            continue
        m = ROW.match(line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            assert len(cells) in (3, 4), f"row {m.group(1)} should have 4 or 5 cells: {line}"
            if len(cells) == 4:
                cmd = re.fullmatch(r"`([^`]+)`", cells[3])
                assert cmd, f"row {m.group(1)}: the last cell must be one `command`"
                row_command = cmd.group(1)
            else:
                assert command, f"row {m.group(1)} has no command above it"
                row_command = command
            rows.append((m.group(1), cells[0], cells[1], cells[2], row_command))
    return rows


def seed_text():
    for d in SEED_CANDIDATES:
        if d is not None and (d / "vanilla_lora.rst").exists():
            return (d / "vanilla_lora.rst").read_text(encoding="utf-8") + (d / "README.md").read_text(encoding="utf-8")
    return None


def squash(s: str) -> str:
    return " ".join(s.split())


def check_pytest_row(rid, minilora_cell, command):
    node = command.split()[1]
    path, _, func = node.partition("::")
    src = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^def {func}\(", src, re.M), f"{rid}: {node} does not exist"
    body = src[src.index(f"def {func}("):]
    nxt = re.search(r"^(def |class |@)", body[1:], re.M)
    body = body[: nxt.start() + 1] if nxt else body
    for snippet in re.findall(r"`([^`]+)`", minilora_cell):
        assert snippet in body, f"{rid}: `{snippet}` is not asserted in {node}"


def check_minilora_row(rid, command):
    from minilora.cli.main import build_parser

    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)            # raises on an unknown subcommand or flag
    if getattr(args, "config", None):
        runs = json.loads((ROOT / args.config).read_text(encoding="utf-8"))
        assert args.run in runs, f"{rid}: run {args.run} is not in {args.config}"


def test_reproduce_page_figures_match_the_commands():
    rows = reproduce_rows()
    ids = [r[0] for r in rows]
    assert len(rows) >= 20 and len(set(ids)) == len(ids), ids
    seed = seed_text()
    seed_numbers = set(numbers(seed)) if seed else set()
    kinds = set()
    for rid, _figure, published, ours, command in rows:
        kind = command.split()[0]
        kinds.add(kind)
        if kind == "param-calc":
            out = param_calc_output(command)
            printed = set(numbers(out))
            missing = [t for t in numbers(ours) if t not in printed]
            assert not missing, f"{rid}: {command} does not print {missing}"
            for snippet in re.findall(r"`([^`]+)`", ours):
                assert squash(snippet) in squash(out), f"{rid}: {command} does not print `{snippet}`"
            if rid.startswith("P") or seed is not None:
                source = printed | (seed_numbers if rid.startswith("S") else set())
                missing = [t for t in numbers(published) if t not in source]
                assert not missing, f"{rid}: published figures {missing} are not in the source or the output"
        elif kind == "pytest":
            check_pytest_row(rid, ours, command)
        elif kind == "minilora":
            check_minilora_row(rid, command)
        else:
            pytest.fail(f"{rid}: unknown command {command!r}")
    assert kinds == {"param-calc", "pytest", "minilora"}


def test_seed_figures_are_quoted_from_the_seed():
    seed = seed_text()
    if seed is None:
        pytest.skip("the seed document (shared/seed) is not beside this checkout")
    seed_numbers = set(numbers(seed))
    for rid, _figure, published, _ours, _command in reproduce_rows():
        if rid.startswith("S"):
            missing = [t for t in significant(numbers(published)) if t not in seed_numbers]
            assert not missing, f"{rid}: {missing} is not in the seed document"


# ---- names and paths the pages mention -----------------------------------------------------------
def test_named_tests_and_paths_exist():
    hooks = load_hooks()
    pages = sorted(DOCS.rglob("*.md"))
    assert len(pages) >= 8
    problems = []
    for page in pages:
        problems += hooks.check_references(page.read_text(encoding="utf-8"), str(page.relative_to(DOCS)))
    assert not problems, problems
    assert hooks.check_references("`tests/test_lora.py::no_such_test` `minilora/nope.py`", "x") != []


def test_every_module_has_one_place_in_the_api_reference():
    hooks = load_hooks()
    assigned, problems = hooks.api_assignments()
    assert not problems, problems
    placed = [m for ms in assigned.values() for m in ms]
    assert sorted(placed) == list(hooks.all_modules()) and len(placed) == len(set(placed))
    assert "minilora.layers.lora" in assigned[("api/layers.md", 0)]


def test_cli_reference_lists_every_subcommand():
    hooks = load_hooks()
    from minilora.cli.main import build_parser

    text = hooks.cli_markdown("minilora")
    names = list(hooks._subparsers(build_parser()))
    assert {"demo", "demo-linear", "train"} <= set(names)
    for name in names:
        assert f"### `minilora {name} --help`" in text
    pc = hooks.cli_markdown("param-calc")
    assert "--targets" in pc and "param-calc explain" in pc


# ---- claims made on the pages that no other test pins --------------------------------------------
def test_claim_first_step_moves_only_b():
    """derivations.md#lora: at init (B = 0) dA = s (G B)^T u is exactly zero and dB is not."""
    from minilora.layers.lora import init_lora_weights, lora_backward, lora_forward

    rng = np.random.default_rng(0)
    a, b = init_lora_weights(6, 5, 3, rng, np, "gaussian", "float64")
    x, w0 = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))
    h, cache = lora_forward(x, w0, a, b, 2.0)
    _, da, db = lora_backward(rng.standard_normal(h.shape), cache)
    assert not da.any() and np.abs(db).min() > 0


def test_claim_random_update_grows_like_sqrt_r():
    """derivations.md#rslora: with random factors |B A x| grows like sqrt(r), so alpha/sqrt(r) keeps
    the update's size flat in r while alpha/r shrinks it like 1/sqrt(r)."""
    from minilora.layers.lora import lora_scaling

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 256))

    def rms(r):
        vals = [np.sqrt(np.mean(((x @ rng.standard_normal((r, 256)).T) @ rng.standard_normal((256, r)).T) ** 2))
                for _ in range(4)]
        return float(np.mean(vals))

    small, large = rms(4), rms(64)                    # r grows 16x
    assert large / small == pytest.approx(4.0, rel=0.15)
    rs = lora_scaling(64, 16, True) * large / (lora_scaling(4, 16, True) * small)
    plain = lora_scaling(64, 16) * large / (lora_scaling(4, 16) * small)
    assert rs == pytest.approx(1.0, rel=0.15) and plain == pytest.approx(0.25, rel=0.15)


def test_claim_default_init_update_shrinks_like_inverse_sqrt_r():
    """derivations.md#rslora: under the default init (A with std 1/r) and a unit-variance B, |B A x|
    goes 0.25x from r = 4 to r = 64, not 4x: the sqrt(r) argument needs r-independent factor scales."""
    from minilora.layers.lora import init_lora_weights

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 256))

    def rms(r):
        vals = []
        for _ in range(4):
            a, _ = init_lora_weights(256, 256, r, rng, np, init="gaussian", dtype="float64")
            assert a.std() == pytest.approx(1 / r, rel=0.1)
            vals.append(np.sqrt(np.mean(((x @ a.T) @ rng.standard_normal((256, r)).T) ** 2)))
        return float(np.mean(vals))

    assert rms(64) / rms(4) == pytest.approx(0.25, rel=0.15)


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, tuple):
        for o in obj:
            yield from _arrays(o)


def test_claim_backwards_do_not_write_into_dout_or_cache():
    """architecture.md: a backward never writes into dout or its cache."""
    from minilora.layers import attention, embedding, linear, lora, loss, mlp, rmsnorm, rope

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8))
    q, kv = rng.standard_normal((2, 4, 3, 8)), rng.standard_normal((2, 2, 3, 8))
    cos, sin = rope.rope_tables(3, 8, 10000.0, np, "float64")
    cases = [
        (linear.linear_forward(x, rng.standard_normal((5, 8)), rng.standard_normal(5)), linear.linear_backward),
        (lora.lora_forward(x, rng.standard_normal((5, 8)), rng.standard_normal((2, 8)), rng.standard_normal((5, 2)),
                           2.0, None, 0.5, np.random.default_rng(0)), lora.lora_backward),
        (embedding.embedding_forward(np.array([[1, 1, 2]]), rng.standard_normal((4, 8))), embedding.embedding_backward),
        (rmsnorm.rmsnorm_forward(x, rng.standard_normal(8)), rmsnorm.rmsnorm_backward),
        (rope.rope_forward(q, cos, sin), rope.rope_backward),
        (attention.attention_forward(q, kv, kv.copy()), attention.attention_backward),
        (mlp.swiglu_forward(x, x.copy()), mlp.swiglu_backward),
    ]
    for (out, cache), backward in cases:
        dout = rng.standard_normal(out.shape)
        before = [a.copy() for a in _arrays((dout, tuple(cache)))]
        backward(dout, cache)
        after = list(_arrays((dout, tuple(cache))))
        assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True)), backward.__name__
    _, cache = loss.cross_entropy_forward(rng.standard_normal((2, 3, 7)), np.array([[1, -100, 3], [0, 6, 2]]))
    before = [a.copy() for a in _arrays(tuple(cache))]
    loss.cross_entropy_backward(cache)
    assert all(np.array_equal(b, a) for b, a in zip(before, _arrays(tuple(cache)), strict=True))


# ---- the build ---------------------------------------------------------------------------------
HREF = re.compile(r'(?:href|src)="([^"]*)"')
IDS = re.compile(r'\sid="([^"]+)"')


def check_site_links(site: Path) -> list:
    """Relative links and #anchors in the built HTML that lead nowhere."""
    problems, ids = [], {}
    pages = sorted(site.rglob("*.html"))

    def ids_of(path):
        if path not in ids:
            ids[path] = set(IDS.findall(path.read_text(encoding="utf-8", errors="replace")))
        return ids[path]

    for page in pages:
        if page.name == "404.html":                          # served from any depth: root-absolute links
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        for url in HREF.findall(text):
            url = html.unescape(url)
            if re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("//"):
                continue                                        # http:, https:, mailto:, data:
            path, _, frag = url.partition("#")
            target = page if not path else (page.parent / path).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: {url} (no such file)")
            elif frag and target.suffix == ".html" and frag not in ids_of(target):
                problems.append(f"{page.relative_to(site)}: {url} (no such anchor)")
    return problems


ASSET_TAG = re.compile(r"<(script|link)\b[^>]*>", re.I)
ASSET_URL = re.compile(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", re.I)
CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*["']?([^"')\s;]+)""", re.I)


def remote_assets(site: Path) -> list:
    """'page: url' for every script or stylesheet a built page (or a shipped .css) loads from the
    network: <script src>, <link href> (stylesheets, fonts, preloads) and CSS @import with an
    http(s) or protocol-relative URL. Plain <a href> links are not loads and are allowed."""
    found = []
    for page in sorted(site.rglob("*.html")) + sorted(site.rglob("*.css")):
        text = page.read_text(encoding="utf-8", errors="replace")
        urls = [m.group(1) for tag in ASSET_TAG.finditer(text) for m in ASSET_URL.finditer(tag.group(0))]
        urls += CSS_IMPORT.findall(text)
        found += [f"{page.relative_to(site)}: {u}" for u in map(html.unescape, urls)
                  if re.match(r"^(?:https?:)?//", u, re.I)]
    return found


def test_remote_assets_finds_scripts_and_stylesheets_but_not_links(tmp_path):
    (tmp_path / "a.html").write_text(
        '<script src="https://cdn.example/x.js"></script><a href="https://example.org">ok</a>'
        "<link rel=stylesheet href=//fonts.example/f.css><script src=\"js/local.js\"></script>", encoding="utf-8")
    (tmp_path / "s.css").write_text('@import url("http://cdn.example/y.css"); a { color: red }', encoding="utf-8")
    assert remote_assets(tmp_path) == ["a.html: https://cdn.example/x.js", "a.html: //fonts.example/f.css",
                                       "s.css: http://cdn.example/y.css"]


def test_docs_build_strict(tmp_path, record_property):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("mkdocs_jupyter")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OPENBLAS_NUM_THREADS="1")
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter() - t0, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(f"\nmkdocs build --strict: {wall:.1f} s wall, {cpu:.1f} s CPU")
    record_property("docs_build_seconds", round(wall, 1))
    assert proc.returncode == 0, proc.stderr[-6000:]
    for page in ("index.html", "derivations/index.html", "parameters/index.html", "reproduce/index.html",
                 "cli/index.html", "architecture/index.html", "backend/index.html", "api/layers/index.html"):
        assert (site / page).exists(), page
    hooks = load_hooks()
    for nb in hooks.notebooks():
        assert (site / "notebooks" / nb.stem / "index.html").exists(), nb.name
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "minilora demo-linear --help" in cli and "param-calc explain --help" in cli
    layers = (site / "api" / "layers" / "index.html").read_text(encoding="utf-8")
    assert 'id="minilora.layers.lora.lora_backward"' in layers
    problems = check_site_links(site)
    assert not problems, problems[:20]
    remote = remote_assets(site)                 # the site renders offline (MathJax ships in docs/)
    assert not remote, remote[:20]
    assert (site / "javascripts" / "mathjax" / "tex-chtml-full.js").is_file()
    assert "javascripts/mathjax/tex-chtml-full.js" in (site / "derivations" / "index.html").read_text(encoding="utf-8")
