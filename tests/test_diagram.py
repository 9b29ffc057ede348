"""The LoRA-layer diagram (docs/img/lora_layer.svg) is what scripts/make_diagram.py draws, and is shown.

Under the matplotlib version that wrote the committed file (named in its Creator field) the
script must reproduce it byte for byte; under another version it must still render a valid SVG
(matplotlib's SVG output changes between versions), and the byte comparison is skipped.
"""
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "docs" / "img" / "lora_layer.svg"


def _script():
    spec = importlib.util.spec_from_file_location("make_diagram", ROOT / "scripts" / "make_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_svg_is_what_the_script_draws():
    make_diagram = _script()
    svg = make_diagram.render()
    assert ET.fromstring(svg).tag.endswith("svg")
    committed = SVG.read_bytes()
    assert ET.fromstring(committed).tag.endswith("svg")
    m = re.search(rb"<dc:title>(scripts/make_diagram\.py with matplotlib [^<]+)</dc:title>", committed)
    assert m, "the committed SVG does not name its creator: re-run scripts/make_diagram.py"
    if m.group(1).decode() != make_diagram.creator():
        pytest.skip(f"committed with {m.group(1).decode()}; this is matplotlib {matplotlib.__version__}")
    assert svg == committed, "docs/img/lora_layer.svg is stale: re-run scripts/make_diagram.py"


def test_diagram_is_shown_on_the_index_and_in_notebook_01():
    assert "](img/lora_layer.svg)" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    nb = (ROOT / "notebooks" / "01_lora_by_hand.ipynb").read_text(encoding="utf-8")
    assert "../docs/img/lora_layer.svg" in nb
