"""Element types: float32 (AG_FLOAT32 = 1) and float64 (AG_FLOAT64 = 2) compute and have
gradients; int64 (AG_INT64 = 3: indices, labels, counts) and bool_ (AG_BOOL = 4: masks) are
created, moved, compared and used as indices or masks (see ``libautograd.indexing_ops``), and
every op that computes refuses them (DTypeError).

There is no implicit promotion: operands of one operation must have the same dtype. Data with
no float dtype of its own (Python numbers, lists, integer or bool arrays) becomes
``default_dtype``, float64, unless a dtype is asked for (``tensor(x, dtype=libautograd.int64)``).
"""

import numpy as np


class DType:
    """One element type: its name, its AG_* code and the matching NumPy dtype."""

    __slots__ = ("name", "code", "numpy", "_attr")

    def __init__(self, name, code, numpy_dtype, attr=None):
        self.name = name
        self.code = code
        self.numpy = np.dtype(numpy_dtype)
        self._attr = attr or name  # the module-level name ("bool_" for bool)

    def __repr__(self):
        return f"libautograd.{self._attr}"

    def __str__(self):
        return self.name

    def __reduce__(self):
        # The dtypes are singletons, compared with `is`: copies and pickles name the
        # module-level object instead of building another one.
        return self._attr

    @property
    def is_floating_point(self):
        """Whether values of this dtype are computed with and have gradients."""
        return self.code in (1, 2)

    @property
    def itemsize(self):
        """Bytes per element."""
        return self.numpy.itemsize


float32 = DType("float32", 1, np.float32)
float64 = DType("float64", 2, np.float64)
int64 = DType("int64", 3, np.int64)
bool_ = DType("bool", 4, np.bool_, attr="bool_")
default_dtype = float64

_ALL = (float32, float64, int64, bool_)
_BY_CODE = {d.code: d for d in _ALL}
_BY_NUMPY = {d.numpy: d for d in _ALL}
_BY_NAME = {"float32": float32, "float64": float64, "int64": int64, "bool": bool_, "bool_": bool_}


def from_code(code):
    """The DType of an AG_* code returned by the library."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise ValueError(f"libautograd returned an unknown dtype code {code}") from None


def as_dtype(value):
    """Turns a DType, a name ("float32", "float64", "int64", "bool"), np.float32 / np.float64 /
    np.int64 / np.bool_ (or Python's bool) or a NumPy dtype into a DType.

    Raises TypeError for anything else (no int32, unsigned or complex tensors exist).
    """
    if isinstance(value, DType):
        return value
    if value is None:
        raise TypeError("dtype must be float32, float64, int64 or bool, not None")
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    try:
        npd = np.dtype(value)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NUMPY:
        return _BY_NUMPY[npd]
    raise TypeError(f"unsupported dtype {value!r}: libautograd has float32, float64, int64 and "
                    "bool")


def of_array(array):
    """The DType that holds `array`'s values as they are (float32, float64, int64 or bool),
    or None when there is none (other integer widths, unsigned, complex)."""
    return _BY_NUMPY.get(array.dtype.newbyteorder("="))


def for_array(array):
    """The DType a NumPy array becomes: its own if float32/float64, else the default."""
    kind = array.dtype
    if kind.kind == "f" and kind.itemsize in (4, 8):
        return float32 if kind.itemsize == 4 else float64
    if kind.kind in "biuf":
        return default_dtype
    raise TypeError(f"cannot make a tensor from an array of dtype {kind} (need numbers)")
