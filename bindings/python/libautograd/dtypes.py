"""Element types: libautograd has float32 (AG_FLOAT32 = 1) and float64 (AG_FLOAT64 = 2).

There is no implicit promotion: operands of one operation must have the same dtype. Data with
no float dtype of its own (Python numbers, lists, integer or bool arrays) becomes
``default_dtype``, float64, as in NumPy.
"""

import numpy as np


class DType:
    """One element type: its name, its AG_* code and the matching NumPy dtype."""

    __slots__ = ("name", "code", "numpy")

    def __init__(self, name, code, numpy_dtype):
        self.name = name
        self.code = code
        self.numpy = np.dtype(numpy_dtype)

    def __repr__(self):
        return f"libautograd.{self.name}"

    def __str__(self):
        return self.name

    def __reduce__(self):
        # The two dtypes are singletons, compared with `is`: copies and pickles name the
        # module-level object instead of building another one.
        return self.name

    @property
    def itemsize(self):
        """Bytes per element."""
        return self.numpy.itemsize


float32 = DType("float32", 1, np.float32)
float64 = DType("float64", 2, np.float64)
default_dtype = float64

_BY_CODE = {float32.code: float32, float64.code: float64}
_BY_NUMPY = {float32.numpy: float32, float64.numpy: float64}


def from_code(code):
    """The DType of an AG_* code returned by the library."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise ValueError(f"libautograd returned an unknown dtype code {code}") from None


def as_dtype(value):
    """Turns a DType, "float32"/"float64", np.float32/np.float64 or a NumPy dtype into a DType.

    Raises TypeError for anything else (no integer or complex tensors exist).
    """
    if isinstance(value, DType):
        return value
    if value is None:
        raise TypeError("dtype must be float32 or float64, not None")
    if isinstance(value, str) and value in ("float32", "float64"):
        return float32 if value == "float32" else float64
    try:
        npd = np.dtype(value)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NUMPY:
        return _BY_NUMPY[npd]
    raise TypeError(f"unsupported dtype {value!r}: libautograd has float32 and float64")


def for_array(array):
    """The DType a NumPy array becomes: its own if float32/float64, else the default."""
    kind = array.dtype
    if kind.kind == "f" and kind.itemsize in (4, 8):
        return float32 if kind.itemsize == 4 else float64
    if kind.kind in "biuf":
        return default_dtype
    raise TypeError(f"cannot make a tensor from an array of dtype {kind} (need numbers)")
