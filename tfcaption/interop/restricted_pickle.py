"""Unpickling files we did not write (the M2 release's .pth checkpoint and vocab.pkl) without running them.

A pickle can name any global and call it; loading an untrusted one with ``pickle.load`` runs whatever it
says. The unpickler here resolves only an allow-list of globals (everything else raises
:class:`UnsafePickle`), and the allow-listed callables are wrapped in :class:`Guarded` so a pickle's BUILD
opcode cannot set attributes on them and so change them for the rest of the process.

TensorFlow-free on purpose: the vocab reader must not pull in TensorFlow.
"""

from __future__ import annotations

import pickle
from typing import Any, Mapping

__all__ = ["UnsafePickle", "MalformedPickle", "Guarded", "AllowListUnpickler", "load_or_raise"]


class UnsafePickle(Exception):
    """A global outside the allow-list; the message is ``module.name``. Callers turn it into their error."""


class MalformedPickle(Exception):
    """A pickle whose structure is wrong for what it claims to be; callers turn it into their error."""


class Guarded:
    """An allow-listed callable as the unpickler sees it: callable, but its state cannot be set.

    Handing the unpickler e.g. the real ``collections.Counter`` would let a hostile file set attributes
    on it (BUILD falls back to ``setattr``) and alter Counter for the whole process.
    """

    __slots__ = ("fn", "qualname")

    def __init__(self, fn, qualname: str):
        self.fn = fn
        self.qualname = qualname

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state):
        raise MalformedPickle(f"the pickle tries to set state on {self.qualname}")

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


class AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``allowed`` (``{(module, name): object}``); no persistent ids."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any], **kwargs):
        super().__init__(file, encoding="utf-8", **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise MalformedPickle(f"unexpected persistent id {pid!r}")


def load_or_raise(unpickler: pickle.Unpickler, error: type, path: str, what: str, unsafe_detail: str) -> Any:
    """``unpickler.load()``, every failure turned into ``error`` (a ValueError) naming ``path`` and ``what``.

    Args:
        unpickler: a restricted unpickler over the file's stream.
        error: the reader's exception class; raised as it is when the unpickler raises it itself.
        what: what is being read, for the messages ("vocabulary pickle", "checkpoint data.pkl").
        unsafe_detail: appended to the unsafe-global message: what such a file may hold instead.
    """
    try:
        return unpickler.load()
    except UnsafePickle as exc:
        raise error(f"{path}: unsafe pickle global '{exc}'{unsafe_detail}") from None
    except MalformedPickle as exc:
        raise error(f"{path}: malformed {what}: {exc}") from None
    except error:
        raise
    except (EOFError, pickle.UnpicklingError) as exc:
        raise error(f"{path}: truncated or corrupt {what} ({exc or type(exc).__name__})") from None
    except Exception as exc:  # any other pickle-level failure (incl. RecursionError) on a corrupt file
        raise error(f"{path}: corrupt {what} ({type(exc).__name__}: {exc})") from None
