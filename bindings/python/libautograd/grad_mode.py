"""Grad mode: whether operations on the calling thread record graphs (ag_set_grad_enabled).

The mode is per thread, as in the C library. The context managers restore the previous mode
on exit, also when the block raises; they work as decorators too.
"""

import functools
from ctypes import byref, c_bool

from ._library import lib
from .errors import check


def is_grad_enabled():
    """Whether operations on this thread record graphs (True unless turned off)."""
    out = c_bool(False)
    check(lib.ag_is_grad_enabled(byref(out)))
    return out.value


def _set(enabled):
    previous = c_bool(False)
    check(lib.ag_set_grad_enabled(byref(previous), bool(enabled)))
    return previous.value


class _GradMode:
    """Base of the context managers: sets a mode on entry, restores the previous on exit."""

    _mode = True

    def __enter__(self):
        self._previous = _set(self._mode)
        return self

    def __exit__(self, exc_type, exc, tb):
        _set(self._previous)
        return False

    def __call__(self, fn):
        """Use as a decorator: fn runs with this mode."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper

    def _fresh(self):
        return type(self)()


class no_grad(_GradMode):
    """Context manager (and decorator): no graph is recorded inside, results do not require
    grad. Use it for evaluation and for updates done by hand."""

    _mode = False


class enable_grad(_GradMode):
    """Context manager (and decorator): recording on inside, e.g. within a no_grad block."""

    _mode = True


class set_grad_enabled(_GradMode):
    """Sets grad mode now (as a plain call) and, used with ``with``, restores the mode that
    was in force before the call when the block ends."""

    def __init__(self, mode, _now=True):
        if not isinstance(mode, bool):
            raise TypeError(f"mode must be a bool, not {type(mode).__name__}")
        self._mode = mode
        self._now = _now
        if _now:
            self._previous = _set(mode)

    def __enter__(self):
        if not self._now:
            self._previous = _set(self._mode)
        return self

    def _fresh(self):
        return set_grad_enabled(self._mode, _now=False)
