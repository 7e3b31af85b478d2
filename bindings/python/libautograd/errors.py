"""Exceptions: every non-zero ag_status becomes an AutogradError subclass.

The exception carries the library's own message (ag_last_error(), read on the thread that
made the failing call), the numeric status and its name. The subclasses also derive from the
built-in exception a Python programmer would expect, so ``except ValueError`` catches a shape
mismatch just as it would in NumPy.
"""

import threading

from ._library import lib

OK = 0
ERR_INVALID_HANDLE = 1
ERR_ARGUMENT = 2
ERR_SHAPE = 3
ERR_DTYPE = 4
ERR_STATE = 5
ERR_OUT_OF_MEMORY = 6
ERR_CALLBACK = 7
ERR_INTERNAL = 8
ERR_IO = 9
ERR_FORMAT = 10


class AutogradError(Exception):
    """A call into libautograd failed. ``status`` is the ag_status code, ``status_name`` its
    name ("AG_ERR_SHAPE"), ``message`` the text of ag_last_error()."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = status_name(self.status)
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


class InvalidHandleError(AutogradError, ReferenceError):
    """AG_ERR_INVALID_HANDLE: a freed, zero or made-up handle (e.g. after Tensor.free())."""


class ArgumentError(AutogradError, ValueError):
    """AG_ERR_ARGUMENT: a bad count, axis, rank, index or hyper-parameter."""


class ShapeError(AutogradError, ValueError):
    """AG_ERR_SHAPE: shapes that do not fit together."""


class DTypeError(AutogradError, TypeError):
    """AG_ERR_DTYPE: an unknown dtype, or operands of different dtypes."""


class StateError(AutogradError, RuntimeError):
    """AG_ERR_STATE: graph misuse (backward twice without retain_graph, no seed, ...)."""


class OutOfMemoryError(AutogradError, MemoryError):
    """AG_ERR_OUT_OF_MEMORY: an allocation that could not be satisfied."""


class CallbackError(AutogradError, RuntimeError):
    """AG_ERR_CALLBACK: a Python hook, gradcheck function or transform's function raised (it
    is the __cause__), or a callback broke its contract (a Function's backward returned the
    wrong number of gradients, or one of the wrong shape). An exception raised in a Function's
    forward, backward or jvp is raised itself instead, this error as its __cause__."""


class InternalError(AutogradError, RuntimeError):
    """AG_ERR_INTERNAL: a bug in libautograd; please report it with the message."""


class FileError(AutogradError, OSError):
    """AG_ERR_IO: a file could not be opened, read or written; the message names the path and
    the system's reason."""


class FormatError(AutogradError, ValueError):
    """AG_ERR_FORMAT: a file or buffer is not what it claims to be (a truncated safetensors
    file, a header that is malformed or lies about its tensors)."""


_BY_STATUS = {
    ERR_INVALID_HANDLE: InvalidHandleError,
    ERR_ARGUMENT: ArgumentError,
    ERR_SHAPE: ShapeError,
    ERR_DTYPE: DTypeError,
    ERR_STATE: StateError,
    ERR_OUT_OF_MEMORY: OutOfMemoryError,
    ERR_CALLBACK: CallbackError,
    ERR_INTERNAL: InternalError,
    ERR_IO: FileError,
    ERR_FORMAT: FormatError,
}

# The exception a Python callback (hook, gradcheck or transform function) raised, per thread, kept until the
# C call that ran the callback returns AG_ERR_CALLBACK and it can be attached as the cause.
_pending = threading.local()


def status_name(status):
    """The library's constant name for a status code ("AG_UNKNOWN_STATUS" for others)."""
    return lib.ag_status_name(int(status)).decode("utf-8", "replace")


def last_error():
    """The message of the last failed call on this thread ("" if none failed)."""
    return lib.ag_last_error().decode("utf-8", "replace")


# The attribute that marks an exception raised in a Function's callback: the call that sees
# AG_ERR_CALLBACK raises it again (see check), also after it crossed another callback (a
# transform's function, a compiled function's capture) on its way out.
_REraise = "_libautograd_reraise"


def set_pending(exc, reraise=False):
    """Remembers the exception a callback raised on this thread (see check). reraise: check
    raises exc itself (chained with the library's error) rather than a CallbackError caused by
    it; for the callbacks of a Function, whose exceptions keep their type."""
    if reraise:
        try:
            setattr(exc, _REraise, True)
        except (AttributeError, TypeError):
            pass  # an exception object without attributes: reported as a CallbackError
    _pending.exc = exc


def take_pending():
    """Returns and forgets the exception a callback raised on this thread, or None."""
    exc = getattr(_pending, "exc", None)
    _pending.exc = None
    return exc


def error_for(status):
    """The exception for a non-zero status, carrying this thread's ag_last_error()."""
    cls = _BY_STATUS.get(int(status), AutogradError)
    return cls(status, last_error())


def check(status):
    """Raises the matching AutogradError when status is not AG_OK.

    A Python exception raised inside a callback during that call becomes the __cause__.
    """
    if status == OK:
        return
    exc = error_for(status)
    cause = take_pending()
    if cause is None:
        raise exc
    if status == ERR_CALLBACK and getattr(cause, _REraise, False):
        _raise_again(cause, exc)
    raise exc from cause


def _raise_again(user_exc, library_exc):
    """Raises the exception a Function's callback raised, its __cause__ the library's error.
    Crossing several calls, the library's errors chain (the outermost is the direct cause); a
    cause the exception had of its own is kept, the library's message then added as a note."""
    own = user_exc.__cause__
    if own is not None and not getattr(user_exc, "_libautograd_chained", False):
        if hasattr(user_exc, "add_note"):
            user_exc.add_note(f"(raised in a libautograd callback: {library_exc})")
        raise user_exc
    if own is not None:
        library_exc.__cause__ = own
    user_exc._libautograd_chained = True
    raise user_exc from library_exc
