"""MkDocs hooks for the minilora site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

1. on_config: optional pages written in other issues leave the nav while they do not exist, and
   the Notebooks section is filled with notebooks/NN_*.ipynb, so the nav never names a missing file.
2. on_files: those notebooks become pages, although they live outside docs/. This runs before
   mkdocs-jupyter's on_files (priority 100), which then renders them as saved (not executed).
3. on_page_markdown expands the markers that keep generated text from going stale:
   ``<!-- cli: minilora -->`` / ``<!-- cli: param-calc -->``: the --help of every (sub)command,
   from the argparse parsers; ``<!-- api: module ... -->``: mkdocstrings blocks, every module of
   minilora and param_calc placed exactly once; ``<!-- imports -->`` / ``<!-- numpy-modules -->``:
   what each module imports, read from the source; ``<!-- notebooks -->``: the list of notebooks.
   It also warns (an error under strict) when a page names a ``tests/test_x.py::test_name`` or a
   repository path in backticks that does not exist.
4. on_page_content: in notebook pages, links written for browsing the repository
   (../docs/derivations.md#lora, 02_backprop.ipynb, ../README.md, ../minilora/layers/lora.py) are
   rewritten to the site's pages; a link to a repository file with no page becomes plain text;
   a link to nothing is a warning.

The functions before the events need no mkdocs: tests/test_docs.py uses them directly.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import html
import json
import logging
import os
import posixpath
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

try:
    from mkdocs.plugins import event_priority
    from mkdocs.structure.files import File
    from mkdocs.utils import get_relative_url
except ImportError:          # tests/test_docs.py uses the checks below without the docs extra
    def event_priority(_priority):
        return lambda f: f

log = logging.getLogger("mkdocs.hooks.minilora")

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL_PAGES = {"analysis.md", "performance.md"}   # written in other issues
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
HELP_COLUMNS = "88"                                 # fits a code block of the theme

if str(ROOT) not in sys.path:                        # import minilora / param_calc from this checkout
    sys.path.insert(0, str(ROOT))


# ---- notebooks ----------------------------------------------------------------------------------
def notebooks() -> list:
    """The notebooks shown on the site: notebooks/NN_*.ipynb, in order."""
    return sorted((ROOT / "notebooks").glob(NOTEBOOK_GLOB))


def notebook_title(path: Path) -> str:
    """The first '# ' heading of the notebook's markdown cells, else its file name."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", []))
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _filter_nav(items):
    out = []
    for item in items:
        if isinstance(item, dict):
            (title, value), = item.items()
            if title == "Notebooks":
                nbs = [f"notebooks/{p.name}" for p in notebooks()]
                if nbs:
                    out.append({title: nbs})
                else:
                    log.info("no notebooks/%s yet: the Notebooks section is left out", NOTEBOOK_GLOB)
                continue
            if isinstance(value, list):
                out.append({title: _filter_nav(value)})
                continue
            if isinstance(value, str) and value in OPTIONAL_PAGES and not (ROOT / "docs" / value).exists():
                log.info("optional page %s does not exist yet: left out of the nav", value)
                continue
        out.append(item)
    return out


# ---- the CLI reference -------------------------------------------------------------------------
CLI_MARKER = re.compile(r"<!--\s*cli:\s*([\w-]+)\s*-->")


@contextlib.contextmanager
def _columns(n: str):
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = n
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:                   # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_block(title: str, parser: argparse.ArgumentParser, level: str) -> str:
    text = parser.format_help().rstrip()
    return f"{level} `{title}`\n\n```text\n{text}\n```\n"


def cli_markdown(program: str) -> str:
    """The --help of `program` and of each of its subcommands, as markdown."""
    with _columns(HELP_COLUMNS):
        if program == "minilora":
            from minilora.cli.main import build_parser

            top = build_parser()
            parts = [_help_block("minilora --help", top, "###")]
            parts += [_help_block(f"minilora {name} --help", sub, "###")
                      for name, sub in _subparsers(top).items()]
        elif program == "param-calc":
            from param_calc.cli import build_explain_parser, build_parser

            parts = [_help_block("param-calc --help", build_parser(), "###"),
                     _help_block("param-calc explain --help", build_explain_parser(), "###")]
        else:
            raise ValueError(f"unknown program {program!r} in a <!-- cli: ... --> marker")
    return "\n".join(parts)


# ---- the API reference -------------------------------------------------------------------------
API_MARKER = re.compile(r"<!--\s*api:\s*(.*?)\s*-->", re.S)
API_PACKAGES = ("minilora", "param_calc")


@functools.lru_cache(maxsize=None)
def all_modules() -> tuple:
    """Every module of minilora and param_calc (a package by its own name), sorted."""
    out = set()
    for pkg in API_PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" or "__pycache__" in parts:
                continue
            out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return tuple(sorted(out))


def _is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").exists()


def api_assignments() -> tuple:
    """({(api page src_uri, marker index): [modules]}, problems).

    A marker lists module names ('name?': only if it exists); 'pkg.*' stands for pkg's modules
    that no marker names explicitly; 'rest' for every module no other marker covers, so each
    module has exactly one home.
    """
    modules = all_modules()
    markers = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for i, m in enumerate(API_MARKER.finditer(page.read_text(encoding="utf-8"))):
            markers.append((f"api/{page.name}", i, m.group(1).split()))
    out, problems, taken = {}, [], set()
    for uri, i, names in markers:                                   # explicit names first
        out[(uri, i)] = []
        for name in names:
            if name == "rest" or name.endswith(".*"):
                continue
            optional = name.endswith("?")                          # 'module?': only if it exists
            name = name.rstrip("?")
            if name not in modules and optional:
                continue
            if name not in modules:
                problems.append(f"{uri} names module {name}, which does not exist")
            elif name in taken:
                problems.append(f"{uri} names module {name} a second time")
            else:
                out[(uri, i)].append(name)
                taken.add(name)
    for uri, i, names in markers:                                   # then pkg.* with what is left
        for name in names:
            if name.endswith(".*"):
                got = [m for m in modules if m.startswith(name[:-1]) and m not in taken]
                out[(uri, i)] += got
                taken.update(got)
    for uri, i, names in markers:                                   # then the rest
        if "rest" in names:
            got = [m for m in modules if m not in taken]
            out[(uri, i)] += got
            taken.update(got)
    return out, problems


# Modules whose source is shown under each function (the code the derivations link to). Showing
# the source of every module doubles the build time for little gain.
SOURCE_MODULES = ("minilora.layers.", "minilora.model", "minilora.gradcheck", "minilora.backend",
                  "minilora.adapters", "param_calc.counting", "param_calc.shortcuts")


def _block(module: str) -> str:
    opts = []
    if _is_package(module):
        opts.append("members: false")
    if module.startswith(SOURCE_MODULES):
        opts.append("show_source: true")
    return f"::: {module}" + ("\n    options:" + "".join(f"\n      {o}" for o in opts) if opts else "") + "\n"


def api_markdown(assigned: dict, page_uri: str, markdown: str) -> str:
    """Each api marker replaced by `::: module` blocks; a package shows its docstring only."""
    counter = iter(range(10**6))

    def blocks(_m):
        mods = assigned.get((page_uri, next(counter)), [])
        return "\n".join(_block(m) for m in mods) or "*(no modules)*"

    return API_MARKER.sub(blocks, markdown)


# ---- the import graph (architecture and backend pages) ------------------------------------------
def _module_file(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@functools.lru_cache(maxsize=None)
def module_imports(module: str) -> dict:
    """{'eager': set, 'lazy': set, 'numpy': bool}: the minilora / param_calc modules this module imports
    at import time (eager) or inside functions (lazy), and whether numpy loads with it."""
    import ast

    known = set(all_modules())
    path = _module_file(module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    top_level = set()                                      # nodes run at import time: not inside a def

    def visit(node):
        top_level.add(id(node))
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child)

    visit(tree)
    out = {"eager": set(), "lazy": set(), "numpy": False}

    def add(target: str, node):
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != module:
            out["eager" if id(node) in top_level else "lazy"].add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "numpy" and id(node) in top_level:
                    out["numpy"] = True
                if a.name.split(".")[0] in API_PACKAGES:
                    add(a.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
                if stem.split(".")[0] == "numpy" and id(node) in top_level:
                    out["numpy"] = True
                if stem.split(".")[0] not in API_PACKAGES:
                    continue
            for a in node.names:
                add(f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem, node)
    return out


def imports_markdown() -> str:
    rows = ["| module (`minilora.`) | imports at load time | imports inside functions | numpy |",
            "|---|---|---|---|"]
    for m in all_modules():
        if not m.startswith("minilora"):
            continue
        info = module_imports(m)
        short = lambda ms: ", ".join(f"`{x.removeprefix('minilora.')}`" for x in sorted(ms)) or "-"  # noqa: E731
        name = m.removeprefix("minilora.") if m != "minilora" else m
        rows.append(f"| `{name}` | {short(info['eager'])} | {short(info['lazy'] - info['eager'])} | "
                    f"{'yes' if info['numpy'] else ''} |")
    return "\n".join(rows)


def numpy_modules_markdown() -> str:
    mods = [m for m in all_modules() if m.startswith("minilora") and module_imports(m)["numpy"]]
    return ", ".join(f"`{m}`" for m in mods) or "*(none)*"


# ---- checks of names in the text ---------------------------------------------------------------
TEST_REF = re.compile(r"tests/(test_\w+\.py)(?:::(\w+))?")
# a file path (with an extension): `minilora/tiny-sentiment-base` is a model name, not a path
REPO_PATH = re.compile(r"`((?:minilora|param_calc|tests|configs|data|scripts|notebooks)/[\w./-]*\.\w+)`")


def check_references(markdown: str, where: str) -> list:
    """Problems with the test functions and repository paths that a page names."""
    problems = []
    for m in TEST_REF.finditer(markdown):
        path = ROOT / "tests" / m.group(1)
        if not path.exists():
            problems.append(f"{where} names tests/{m.group(1)}, which does not exist")
        elif m.group(2) and not re.search(rf"^\s*def {m.group(2)}\(", path.read_text(encoding="utf-8"), re.M):
            problems.append(f"{where} names tests/{m.group(1)}::{m.group(2)}, which is not defined there")
    for m in REPO_PATH.finditer(markdown):
        if not (ROOT / m.group(1)).exists():
            problems.append(f"{where} names `{m.group(1)}`, which does not exist")
    return problems


def notebook_list_markdown(page_uri: str) -> str:
    nbs = notebooks()
    if not nbs:
        return "*(The notebooks are not in this checkout yet.)*"
    base = posixpath.dirname(page_uri)
    return "\n".join(f"- [{notebook_title(p)}]({posixpath.relpath(f'notebooks/{p.name}', base or '.')})"
                     for p in nbs)


# ---- links inside notebooks --------------------------------------------------------------------
HREF = re.compile(r'<a ([^>]*?)href="([^"]*)"([^>]*)>(.*?)</a>', re.S)


def _api_pages() -> dict:
    """{module: api page src_uri}."""
    assigned, _ = api_assignments()
    return {m: uri for (uri, _i), ms in assigned.items() for m in ms}


def _site_target(target: Path, by_src: dict):
    """(src_uri of the site page, anchor) for a repository path, or None."""
    if target in by_src:
        return by_src[target].src_uri, ""
    if target == ROOT / "README.md":
        return "index.md", ""
    if target.suffix == ".py" and target.is_relative_to(ROOT):
        module = ".".join(target.relative_to(ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        page = _api_pages().get(module)
        if page:
            return page, module
    return None


def rewrite_notebook_links(content: str, page, files) -> tuple:
    """(content with repository links made site links, problems)."""
    problems = []
    here = Path(page.file.abs_src_path).resolve().parent
    by_src = {Path(f.abs_src_path).resolve(): f for f in files if f.abs_src_path}

    def fix(m):
        pre, href, post, inner = m.groups()
        url = html.unescape(href)
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:      # external, mailto, or '#anchor'
            return m.group(0)
        target = (here / unquote(parts.path)).resolve()
        found = _site_target(target, by_src)
        if found:
            src_uri, anchor = found
            f = files.get_file_from_path(src_uri)
            if f is not None:
                new = get_relative_url(f.url, page.file.url)
                frag = anchor or parts.fragment
                new += f"#{frag}" if frag else ""
                return f'<a {pre}href="{html.escape(new)}"{post}>{inner}</a>'
        if target.exists() and target.is_relative_to(ROOT):
            log.info("%s: %s has no page on the site; shown as text", page.file.src_uri, url)
            return f"<code>{html.escape(str(target.relative_to(ROOT)))}</code>" if inner.strip() == "" \
                else f'<span title="{html.escape(str(target.relative_to(ROOT)))}">{inner}</span>'
        problems.append(f"{page.file.src_uri} links to '{url}', which leads nowhere")
        return m.group(0)

    return HREF.sub(fix, content), problems


# ---- the events ---------------------------------------------------------------------------------
def on_config(config):
    all_modules.cache_clear()                 # `mkdocs serve` rebuilds in the same process
    module_imports.cache_clear()
    config.nav = _filter_nav(config.nav or [])
    return config


@event_priority(100)
def on_files(files, config):
    for nb in notebooks():
        # a plain File rooted at the repository (not File.generated: mkdocs-jupyter's wrapper
        # recomputes abs_src_path from src_dir, which a generated file does not have)
        files.append(File(f"notebooks/{nb.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):                 # rendered by mkdocs-jupyter instead
        return markdown
    for problem in check_references(markdown, page.file.src_uri):
        log.warning(problem)
    if page.file.src_uri.startswith("api/"):
        assigned, problems = api_assignments()
        if page.file.src_uri == "api/index.md":
            for problem in problems:
                log.warning(problem)
        markdown = api_markdown(assigned, page.file.src_uri, markdown)
    markdown = CLI_MARKER.sub(lambda m: cli_markdown(m.group(1)), markdown)
    if "<!-- imports -->" in markdown:
        markdown = markdown.replace("<!-- imports -->", imports_markdown())
    if "<!-- numpy-modules -->" in markdown:
        markdown = markdown.replace("<!-- numpy-modules -->", numpy_modules_markdown())
    if "<!-- notebooks -->" in markdown:
        markdown = markdown.replace("<!-- notebooks -->", notebook_list_markdown(page.file.src_uri))
    return markdown




def on_page_content(content, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        content, problems = rewrite_notebook_links(content, page, files)
        for problem in problems:
            log.warning(problem)
    return content
