"""Typed config fields: a config dataclass's annotations are its checks.

Every config dataclass calls `check_fields(self, PATH)` first in its `__post_init__`: each field's value is
checked against its annotation, converted where the meaning is unambiguous, and a wrong one raises a
`ConfigError`, one line naming the field's dotted path, what it must be and what it got:

    train.epochs must be an integer >= 1, got 'abc' (a string).

Annotations understood (anything else is not checked):
    int, float, bool, str      an int takes an integral float (3.0, 1e4), a float takes an int; a bool takes
                               true / false, the integers 1 / 0 and the words of `BOOL_WORDS` in any case
                               (yes / no, on / off, "1" / "0"); numbers never come from strings ("3" is
                               refused); a str takes a path (pathlib.Path)
    Annotated[T, Range(...)]   a bounded number; `Count`, `PositiveInt`, `Positive`, ... below
    Literal["a", "b"]          one of these strings
    tuple[T, ...]              a list (or tuple) of T; a lone string is a one-item tuple of strings
    dict                       an object with string keys
    list, list[T]              a list (of T)
    A | B, Optional[A]         the first of them that fits (None for null)
Cross-field rules (hidden_dim = num_heads * key_dim, ...) stay in each `__post_init__`, after this check.
A field whose annotation is a dataclass (a config section or model part) is its owner's to build.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from typing import Annotated, Literal, Optional  # noqa: F401 (re-exported for the config modules' annotations)


# The words a boolean field reads from text (any case, spaces trimmed): a `--set` value, a spec's `?download=no`,
# a string in a config file.
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; its message is one line naming the field."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number: `low <= x` (`low < x` when `low_open`), `x <= high` (`x < high` when `high_open`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value):
        if math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self):
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        if low and high:
            return f"{low} and {high}"
        return low or high or ""


Count = Annotated[int, Range(0)]  # 0 or more (0 often means "none" or "all", as each field says)
PositiveInt = Annotated[int, Range(1)]
NonNegative = Annotated[float, Range(0)]
Positive = Annotated[float, Range(0, low_open=True)]
Fraction = Annotated[float, Range(0, 1, high_open=True)]  # dropout, label smoothing, Adam's betas
Weight = Annotated[float, Range(0, 1)]


def _is_union(annotation):
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


class _Mismatch(Exception):
    """Internal: the value does not fit the annotation."""


def describe(annotation):
    """What a value of `annotation` must be, in words: "an integer >= 1", "one of 'xe', 'scst'"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base, *extras = args
        bounds = [extra.describe() for extra in extras if isinstance(extra, Range)]
        return " ".join([describe(base)] + bounds)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if _is_union(annotation):
        return " or ".join(describe(arg) for arg in args)
    if annotation is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_plural(describe(args[0]))}"
    if origin is list:
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if annotation is dict or origin is dict:
        return "an object ({\"name\": value, ...})"
    return {int: "an integer", float: "a number", bool: "true or false (yes/no, on/off, 1/0)", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(text):
    for article in ("an ", "a "):
        if text.startswith(article):
            noun, _, rest = text[len(article):].partition(" ")
            return f"{noun}s {rest}".strip() if not noun.endswith("s") else text[len(article):]
    return text


def _coerce(annotation, value):
    """`value` as `annotation` describes it (converted where unambiguous), or `_Mismatch`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base, *extras = args
        value = _coerce(base, value)
        if any(isinstance(extra, Range) and value not in extra for extra in extras):
            raise _Mismatch
        return value
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    if _is_union(annotation):
        for arg in args:
            try:
                return _coerce(arg, value)
            except _Mismatch:
                pass
        raise _Mismatch
    if annotation is type(None):
        if value is None:
            return value
        raise _Mismatch
    if origin is tuple:
        if isinstance(value, str) and args[0] is str:
            return (value,)
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(_coerce(args[0], item) for item in value)
    if origin is list or annotation is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_coerce(args[0], item) for item in value] if args else list(value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise _Mismatch
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        raise _Mismatch
    if annotation is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Mismatch
        return float(value)
    if annotation is str:
        if isinstance(value, os.PathLike):  # a pathlib.Path for a directory or file field
            value = os.fspath(value)
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value  # not a kind this module checks


def shown(value):
    """A value as an error message shows it: its repr (shortened), strings marked as such ('3' is not 3)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (a string)" if isinstance(value, str) else text


def check(path, annotation, value):
    """`value` checked against `annotation` (and converted), or a `ConfigError` naming `path`."""
    try:
        return _coerce(annotation, value)
    except _Mismatch:
        raise ConfigError(f"{path} must be {describe(annotation)}, got {shown(value)}.") from None


@functools.lru_cache(maxsize=None)
def field_types(cls):
    """`{field name: annotation}` of a config dataclass, `Annotated` extras kept."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def is_section(annotation):
    """Whether a field holds a nested config dataclass (built by its owner, not checked here)."""
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def check_fields(instance, path):
    """Checks (and converts in place) every field of a config dataclass; `path` is its dotted prefix."""
    for name, annotation in field_types(type(instance)).items():
        if not is_section(annotation):
            # object.__setattr__: frozen config dataclasses (ShapesConfig) are converted in place too
            object.__setattr__(instance, name, check(f"{path}.{name}", annotation, getattr(instance, name)))


def section_from_dict(cls, values, path):
    """`cls(**values)` for a config section given as a dict, refusing a non-object and unknown fields by name."""
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        values = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must be an object of {cls.__name__} fields, got {shown(values)}.")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"Unknown {cls.__name__} fields: {', '.join(map(str, unknown))} (in {path}).")
    return cls(**values)
