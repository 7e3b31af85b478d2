"""Whether Tensor's per-op path runs in compiled code or in Python.

``pip install`` compiles the optional extension ``libautograd._native`` (``_native.c``, built
by setup.py when a C compiler and Python's headers are present). With it, the operators of a
Tensor (``+ - * / ** @``, unary ``-``, ``abs()``, comparisons) and the unary functions and full
reductions of ``ops`` (``tanh(x)``, ``x.relu()``, ``x.sum()``, ...) convert their arguments,
call the library and wrap the result in C, about ten times faster per scalar op than through
ctypes; everything else stays Python over ctypes. Without it (no compiler at install time, or
the environment variable ``LIBAUTOGRAD_PURE_PYTHON=1`` at import) the package is pure Python:
the same results, errors and messages, more time per op.

``libautograd.native_enabled()`` tells which path is in use, ``libautograd.native_status()``
why. The extension is not linked against libautograd.so: it receives the addresses of the
functions ``_library.py`` loaded, after their prototypes (generated from the header) are checked
against the signatures the extension was compiled for; any mismatch keeps the Python path.
"""

import ctypes
import importlib
import os

from ._library import lib
from ._prototypes import PROTOTYPES
from .errors import check

ENV_VAR = "LIBAUTOGRAD_PURE_PYTHON"

# The letters of the extension's signatures (see _native.c), by ctypes type.
_CODES = {
    ctypes.POINTER(ctypes.c_uint64): "o",
    ctypes.c_uint64: "t",
    ctypes.c_double: "d",
    ctypes.POINTER(ctypes.c_int64): "a",
    ctypes.c_int64: "n",
    ctypes.c_bool: "b",
    ctypes.c_int32: "i",
    ctypes.POINTER(ctypes.c_int32): "I",
}


def _signature(name):
    """The signature letters of library function `name` from its ctypes prototype, or None
    when it does not return a status or has a parameter type the extension never uses."""
    restype, argtypes = PROTOTYPES[name]
    if restype is not ctypes.c_int32:
        return None
    codes = [_CODES.get(t) for t in argtypes]
    return None if None in codes else "".join(codes)


def _address(name):
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


def _load():
    """(the initialised extension module, "") or (None, why the Python path is used)."""
    setting = os.environ.get(ENV_VAR, "")
    if setting not in ("", "0"):
        return None, f"{ENV_VAR}={setting} is set"
    try:
        _native = importlib.import_module(__package__ + "._native")
    except ModuleNotFoundError as exc:
        if exc.name != __package__ + "._native":
            raise
        return None, ("the compiled extension libautograd._native is not installed (pip install "
                      "builds it when a C compiler and Python's headers are present)")
    except ImportError as exc:  # present but not loadable (built for another Python)
        return None, f"the compiled extension libautograd._native cannot be loaded: {exc}"
    if getattr(_native, "ABI", None) != 1:
        return None, (f"libautograd._native ({_native.__file__}) is from another version of the "
                      "package; reinstall it")
    wrong = [name for name, sig in _native.SIGNATURES.items()
             if name not in PROTOTYPES or _signature(name) != sig]
    if wrong:
        return None, ("the library's prototypes differ from those libautograd._native was "
                      f"compiled for: {', '.join(sorted(wrong))}; reinstall the package")
    _native.init({name: _address(name) for name in _native.SIGNATURES}, check)
    return _native, ""


native, reason = _load()


def op(kind, fallback, c_name=None):
    """The compiled form of an ops.py function, or None on the Python path.

    kind: "unary" (f(x) = c_name(&out, x)), "reduce" (f(x) = c_name(&out, x, NULL, 0, false);
    calls with an axis or keepdim go to the fallback), or "add", "sub", "mul", "truediv", "pow"
    (the operator, when either argument is a Tensor). fallback: the Python function, called
    for everything the fast path leaves (and whose name, doc and signature the Op shows).
    """
    if native is None:
        return None
    address = 0
    if c_name is not None:
        want = native.UNARY_SIGNATURE if kind == "unary" else native.REDUCE_SIGNATURE
        if c_name not in PROTOTYPES or _signature(c_name) != want:
            return None  # a prototype that does not fit: this function stays Python
        address = _address(c_name)
    return native.Op(kind, address, fallback)


def enabled():
    return native is not None


def status():
    if native is not None:
        return f"compiled per-op path: libautograd._native ({native.__file__})"
    return f"pure Python (ctypes) per-op path: {reason}"
