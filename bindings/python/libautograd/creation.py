"""Creating tensors: from data and NumPy, constant fills, ranges, random and initialised.

Data without a float dtype of its own becomes float64 (``dtypes.default_dtype``). Random
creators take a ``seed``: the same seed gives the same numbers on every run and machine; with
seed=None a fresh 64-bit seed is drawn from the operating system.
"""

import secrets
from ctypes import byref, c_uint64

import numpy as np

from . import dtypes as _dt
from ._library import lib
from .errors import check
from .tensor import Tensor, as_int, handle_from_data, handle_from_numpy, int64_array, shape_args

INIT_KAIMING_UNIFORM = 1
INIT_KAIMING_NORMAL = 2
INIT_XAVIER_UNIFORM = 3
INIT_XAVIER_NORMAL = 4
_INIT_KINDS = {
    "kaiming_uniform": INIT_KAIMING_UNIFORM,
    "kaiming_normal": INIT_KAIMING_NORMAL,
    "xavier_uniform": INIT_XAVIER_UNIFORM,
    "xavier_normal": INIT_XAVIER_NORMAL,
}


def _dtype(dtype):
    return _dt.default_dtype if dtype is None else _dt.as_dtype(dtype)


def _finish(handle, requires_grad):
    t = Tensor._wrap(handle)
    if requires_grad:
        t.requires_grad = True
    return t


def _create(fn, shape, *args, requires_grad=False):
    """Calls a creator `fn(out, shape, ndim, *args)` and wraps the new leaf."""
    dims, n = int64_array(shape, "extent")
    out = c_uint64(0)
    check(fn(byref(out), dims, n, *args))
    return _finish(out.value, requires_grad)


def _seed(seed):
    if seed is None:
        return secrets.randbits(64)
    seed = as_int(seed, "seed")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed {seed} is outside 0 .. 2**64 - 1")
    return seed


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, not {type(value).__name__}")
    return float(value)


def tensor(data, dtype=None, requires_grad=False):
    """A new leaf tensor holding a copy of data (a number, nested sequence, NumPy array or
    Tensor). dtype: float32/float64; by default the array's float dtype, else float64."""
    return _finish(handle_from_data(data, dtype), requires_grad)


def from_numpy(array, dtype=None, requires_grad=False):
    """A new leaf tensor holding a copy of a NumPy array, made in one copy by the library.

    A C-contiguous, aligned float32/float64 array is read in place. Any other array
    (non-contiguous, unaligned, byte-swapped, integer or bool, or of another dtype than
    `dtype`) is first converted into a contiguous temporary: one more copy.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy needs a numpy.ndarray, not {type(array).__name__}")
    return _finish(handle_from_numpy(array, dtype), requires_grad)


def zeros(*shape, dtype=None, requires_grad=False):
    """A new leaf of the given shape (zeros(2, 3) or zeros((2, 3))) filled with 0."""
    return _create(lib.ag_tensor_zeros, shape_args(shape), _dtype(dtype).code,
                   requires_grad=requires_grad)


def ones(*shape, dtype=None, requires_grad=False):
    """A new leaf of the given shape filled with 1."""
    return _create(lib.ag_tensor_ones, shape_args(shape), _dtype(dtype).code,
                   requires_grad=requires_grad)


def full(shape, value, dtype=None, requires_grad=False):
    """A new leaf of the given shape (an int or a sequence) filled with value."""
    return _create(lib.ag_tensor_full, shape_args((shape,)), _number(value, "value"),
                   _dtype(dtype).code, requires_grad=requires_grad)


def zeros_like(t, requires_grad=False):
    """Zeros of t's shape and dtype."""
    return zeros(t.shape, dtype=t.dtype, requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    """Ones of t's shape and dtype."""
    return ones(t.shape, dtype=t.dtype, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, requires_grad=False):
    """start, start + step, ... before stop, as numpy.arange (arange(n) is 0 .. n-1)."""
    if stop is None:
        start, stop = 0, start
    out = c_uint64(0)
    check(lib.ag_tensor_arange(byref(out), _number(start, "start"), _number(stop, "stop"),
                               _number(step, "step"), _dtype(dtype).code))
    return _finish(out.value, requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    """The (n, m) matrix with ones on the diagonal (m defaults to n)."""
    n = as_int(n, "n")
    m = n if m is None else as_int(m, "m")
    out = c_uint64(0)
    check(lib.ag_tensor_eye(byref(out), n, m, _dtype(dtype).code))
    return _finish(out.value, requires_grad)


def rand(*shape, low=0.0, high=1.0, seed=None, dtype=None, requires_grad=False):
    """Uniform random values in [low, high) (ag_tensor_rand_uniform); see the module doc
    for seed."""
    return _create(lib.ag_tensor_rand_uniform, shape_args(shape), _number(low, "low"),
                   _number(high, "high"), _seed(seed), _dtype(dtype).code,
                   requires_grad=requires_grad)


def randn(*shape, mean=0.0, std=1.0, seed=None, dtype=None, requires_grad=False):
    """Normal random values with the given mean and std (ag_tensor_rand_normal)."""
    return _create(lib.ag_tensor_rand_normal, shape_args(shape), _number(mean, "mean"),
                   _number(std, "std"), _seed(seed), _dtype(dtype).code,
                   requires_grad=requires_grad)


def init(shape, kind, seed=None, dtype=None, requires_grad=False):
    """A new leaf initialised by kind ("kaiming_uniform", "kaiming_normal", "xavier_uniform",
    "xavier_normal", or an INIT_* code) with torch.nn.init's fan conventions."""
    if isinstance(kind, str):
        if kind not in _INIT_KINDS:
            raise ValueError(f"unknown initialiser {kind!r}; use one of {sorted(_INIT_KINDS)}")
        kind = _INIT_KINDS[kind]
    else:
        kind = as_int(kind, "kind")
        if not -(2**31) <= kind < 2**31:
            raise ValueError(f"initialiser kind {kind} does not fit in int32")
    return _create(lib.ag_tensor_init, shape_args((shape,)), kind, _seed(seed),
                   _dtype(dtype).code, requires_grad=requires_grad)


def kaiming_uniform(*shape, seed=None, dtype=None, requires_grad=False):
    """U(-b, b) with b = sqrt(6 / fan_in) (He init, for ReLU layers)."""
    return init(shape_args(shape), INIT_KAIMING_UNIFORM, seed, dtype, requires_grad)


def kaiming_normal(*shape, seed=None, dtype=None, requires_grad=False):
    """N(0, 2 / fan_in)."""
    return init(shape_args(shape), INIT_KAIMING_NORMAL, seed, dtype, requires_grad)


def xavier_uniform(*shape, seed=None, dtype=None, requires_grad=False):
    """U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot init)."""
    return init(shape_args(shape), INIT_XAVIER_UNIFORM, seed, dtype, requires_grad)


def xavier_normal(*shape, seed=None, dtype=None, requires_grad=False):
    """N(0, 2 / (fan_in + fan_out))."""
    return init(shape_args(shape), INIT_XAVIER_NORMAL, seed, dtype, requires_grad)
