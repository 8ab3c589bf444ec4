"""Unicode character classes as code-point ranges, written as regex classes for Python ``re`` and for RE2.

The tokenizers that normalise text both in Python and in TensorFlow (:mod:`~tfcaption.data.wordpiece`,
:mod:`~tfcaption.data.bert_tokenizer`) take their character classes from Python's ``unicodedata`` and hand
them to both regex engines as explicit ranges, so the two sides use the same tables whatever Unicode version
each engine was built with.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Iterable, Optional

__all__ = ["Ranges", "to_ranges", "classify_code_points", "regex_class"]

Ranges = tuple[tuple[int, int], ...]


def to_ranges(cps: Iterable[int]) -> Ranges:
    """Sorted code points -> inclusive ``(first, last)`` ranges."""
    ranges: list[tuple[int, int]] = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return tuple(ranges)


def classify_code_points(classify: Callable[[int, str], Optional[str]], names: Iterable[str]) -> dict[str, Ranges]:
    """The ranges of each class in ``names``, from one walk over every code point: ``classify(cp, category)``
    (the ``unicodedata`` category) names the class of ``cp``, or ``None`` for none. Surrogates (Cs) are left
    out: they cannot occur in valid UTF-8, and RE2 refuses them in a class. The walk is slow; cache the result."""
    members: dict[str, list[int]] = {name: [] for name in names}
    category = unicodedata.category
    for cp in range(0x110000):
        cat = category(chr(cp))
        if cat == "Cs":
            continue
        name = classify(cp, cat)
        if name is not None:
            members[name].append(cp)
    return {name: to_ranges(cps) for name, cps in members.items()}


def regex_class(ranges: Ranges, engine: str) -> str:
    """The inside of a regex character class for ``ranges``; ``engine`` picks Python (``\\U``) or RE2
    (``\\x{}``) escapes."""
    if engine == "python":
        return "".join(f"\\U{a:08X}" if a == b else f"\\U{a:08X}-\\U{b:08X}" for a, b in ranges)
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
