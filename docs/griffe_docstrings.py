"""A griffe extension for the API reference (mkdocs.yml: mkdocstrings ... extensions).

minilora's docstrings are written to be read in the source, laid out like the code comments of a
derivation: formulas indented under a heading line, columns aligned with spaces, names like
``<module>.lora_A.weight``. Rendered as markdown they would be joined into one paragraph (and a
``<module>`` would vanish as an HTML tag). So every docstring keeps its first paragraph as text and
shows the rest exactly as written, in a plain-text block.
"""
from __future__ import annotations

import griffe


def verbatim(text: str) -> str:
    """First paragraph as markdown, the rest in a ```text block (nothing to do for one paragraph)."""
    head, sep, body = text.strip("\n").partition("\n\n")
    if not sep and "\n" in head:                       # one paragraph over several lines
        first, _, rest = head.partition("\n")
        if rest.startswith((" ", "\t")) or any(line.startswith("    ") for line in rest.splitlines()):
            head, body = first, rest
        else:
            return text
    elif not sep:
        return text
    fence = "````" if "```" in body else "```"
    return f"{head}\n\n{fence}text\n{body.rstrip()}\n{fence}\n"


class VerbatimDocstrings(griffe.Extension):
    """Apply `verbatim` to the docstring of every module, class, function and attribute."""

    def on_object(self, *, obj, loader, **kwargs) -> None:
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = verbatim(obj.docstring.value)
