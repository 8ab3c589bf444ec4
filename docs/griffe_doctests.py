"""A griffe extension for the API reference: doctest examples render as code.

tfcaption's docstrings follow keras-hub's `Example:` heading, which Google-style parsing treats as an
admonition of Markdown, so a doctest's `>>>` lines and their output (`['<unk>', ...]`) would be read as
Markdown (and their brackets as cross-references). This wraps every run of doctest lines in a fenced
`pycon` block before the docstring is parsed. The source files are not changed.
"""

import re

import griffe

_PROMPT = re.compile(r"^(\s*)>>> ")


def fence_doctests(text):
    """Every run of `>>>` lines and the output after them, up to a blank line, fenced as `pycon`."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        match = _PROMPT.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group(1)
        out.append(indent + "```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(indent + "```")
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Fences the doctests of every docstring griffe reads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>> " in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
