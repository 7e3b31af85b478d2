"""Integer tensors, masks and random generators: the header's section of that name.

Indices, labels and counts are int64 tensors (``libautograd.int64``), masks are bool tensors
(``libautograd.bool_``); only float32/float64 values compute and have gradients, so an op that
computes refuses them (DTypeError): convert with ``to`` / ``Tensor.to``. Where an index or mask
argument is asked for, a Tensor of the right dtype is used as it is, and a list or NumPy array
is converted (indices to int64, masks to bool).

Random draws come from a ``Generator`` that carries its state (SplitMix64: the first
``random_uniform`` of ``Generator(seed)`` equals ``libautograd.rand(..., seed=seed)``). Inside a
compiled function (``libautograd.compile``) every call draws anew, as the eager function would.
"""

import operator
from collections import namedtuple
from ctypes import byref, c_uint64

import numpy as np

from . import dtypes as _dt
from ._library import lib
from .errors import check
from .tensor import (
    Tensor,
    as_int,
    handle_from_numpy,
    handle_of,
    int64_array,
    new_tensor,
    shape_args,
)

_INT64_MAX = 2**63 - 1

TopK = namedtuple("TopK", ["values", "indices"])


def _as_index_tensor(value, what):
    """value as an int64 Tensor: an int64 Tensor as it is; ints, lists and integer arrays
    converted. Float values (Tensors or arrays) are refused, as PyTorch refuses float indices."""
    if isinstance(value, Tensor):
        if value.dtype is not _dt.int64:
            raise TypeError(f"{what} must be an int64 tensor, not {value.dtype} "
                            "(convert with .to(libautograd.int64))")
        return value
    array = np.asarray(value)
    if array.dtype.kind not in "iub" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"{what} must be integers, not an array of {array.dtype}")
    if array.dtype.kind == "u" and array.size and array.max() > _INT64_MAX:
        raise ValueError(f"{what}: {array.max()} does not fit in int64")
    return Tensor._wrap(handle_from_numpy(np.asarray(array, dtype=np.int64), _dt.int64))


def _as_mask_tensor(value, what):
    """value as a mask Tensor: a Tensor as it is (any dtype, non-zero is true); a bool, list or
    array converted to bool."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be a Tensor or an array of booleans or numbers")
    return Tensor._wrap(handle_from_numpy(array != 0, _dt.bool_))


def _is_real(value):
    """Whether value is a real number (bools excluded)."""
    real = isinstance(value, (int, float, np.integer, np.floating))
    return real and not isinstance(value, (bool, np.bool_))


def _bool_arg(value, what):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return bool(value)


# ---------------------------------------------------------------------------------------------
# Conversions, indices, masks
# ---------------------------------------------------------------------------------------------


def to(x, dtype):
    """x's values in `dtype` (float32 <-> float64 differentiable; to int64 truncates toward
    zero, ArgumentError for nan, inf or out of range; to bool is "non-zero")."""
    return new_tensor(lib.ag_to_dtype, handle_of(x, "x"), _dt.as_dtype(dtype).code)


def _arg_extremum(fn, x, axis, keepdim):
    handle_of(x, "x")
    keepdim = _bool_arg(keepdim, "keepdim")
    if axis is None:
        # Of the flattened tensor (torch.argmax(x)); keepdim keeps every axis at extent 1.
        shape = x.shape
        flat = x.reshape(-1)  # kept alive in this frame until the call returns
        out = new_tensor(fn, flat._handle, 0, False)
        return out.reshape(*([1] * len(shape))) if keepdim else out
    return new_tensor(fn, x._handle, as_int(axis, "axis"), keepdim)


to_dtype = to  # the C name (ag_to_dtype)


def argmax(x, axis=None, keepdim=False):
    """The int64 index of the largest element along `axis` (None: of the flattened tensor).
    Ties: the first index; nan counts as the largest (the first nan wins), as torch.argmax."""
    return _arg_extremum(lib.ag_argmax, x, axis, keepdim)


def argmin(x, axis=None, keepdim=False):
    """The int64 index of the smallest element along `axis` (nan counts as the smallest)."""
    return _arg_extremum(lib.ag_argmin, x, axis, keepdim)


def topk(x, k, axis=-1, largest=True):
    """The k largest (or smallest) elements along `axis`, in order, and their int64 positions,
    as a (values, indices) named tuple. Gradients flow from values to the positions picked."""
    values, indices = c_uint64(0), c_uint64(0)
    check(lib.ag_topk(byref(values), byref(indices), handle_of(x, "x"), as_int(k, "k"),
                      as_int(axis, "axis"), _bool_arg(largest, "largest")))
    return TopK(Tensor._wrap(values.value), Tensor._wrap(indices.value))


def one_hot(indices, num_classes=-1, dtype=_dt.int64):
    """One-hot rows of class indices: shape indices.shape + (num_classes,), in `dtype` (int64
    by default, as torch.nn.functional.one_hot; float32 or float64 too). num_classes = -1
    takes the largest index + 1."""
    idx = _as_index_tensor(indices, "indices")
    return new_tensor(lib.ag_one_hot, idx._handle, as_int(num_classes, "num_classes"),
                      _dt.as_dtype(dtype).code)


def embedding(indices, weight):
    """Rows of weight (V, D) picked by int64 indices in 0..V-1: shape indices.shape + (D,), as
    torch.nn.functional.embedding(indices, weight). The gradient adds into the rows picked."""
    idx = _as_index_tensor(indices, "indices")
    return new_tensor(lib.ag_embedding, idx._handle, handle_of(weight, "weight"))


def masked_fill(x, mask, value):
    """x with `value` where mask holds (mask broadcasts to x's shape); the gradient flows to the
    elements not filled (0 where filled, also for an inf or nan gradient)."""
    if not _is_real(value):
        raise TypeError(f"value must be a real number, not {type(value).__name__}")
    m = _as_mask_tensor(mask, "mask")
    return new_tensor(lib.ag_masked_fill, handle_of(x, "x"), m._handle, float(value))


def logical_not(a):
    """Elementwise not of a mask (any dtype: non-zero is true), as bool."""
    ta = _as_mask_tensor(a, "a")  # converted operands stay alive until the call returns
    return new_tensor(lib.ag_logical_not, ta._handle)


def logical_and(a, b):
    """Elementwise and of two masks (non-zero is true), broadcast, as bool."""
    ta, tb = _as_mask_tensor(a, "a"), _as_mask_tensor(b, "b")
    return new_tensor(lib.ag_logical_and, ta._handle, tb._handle)


def logical_or(a, b):
    """Elementwise or of two masks (non-zero is true), broadcast, as bool."""
    ta, tb = _as_mask_tensor(a, "a"), _as_mask_tensor(b, "b")
    return new_tensor(lib.ag_logical_or, ta._handle, tb._handle)


def cross_entropy_labels(logits, labels):
    """The batch mean of -log_softmax(logits)[i, labels[i]] with labels an int64 tensor of N
    class indices (a list or integer array is converted). Inside a compiled function the labels
    are read at each call (set them in place with set_data)."""
    lab = _as_index_tensor(labels, "labels")
    return new_tensor(lib.ag_cross_entropy_labels, handle_of(logits, "logits"), lab._handle)


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


_free_generator = lib.ag_generator_free


class Generator:
    """A seeded random number generator that carries its state (ag_generator): every draw
    advances it, so a run follows from one seed. ``Generator(seed)``; ``manual_seed(seed)``
    starts its stream again from a seed; ``get_state()`` / ``set_state(state)`` save and replay
    (the state is one 64-bit int). The handle is freed when the object is collected (a compiled
    function that draws from it keeps the generator alive in the library)."""

    _handle = 0

    def __init__(self, seed=0):
        out = c_uint64(0)
        check(lib.ag_generator_new(byref(out), _seed(seed)))
        self._handle = out.value

    def __del__(self):
        handle, self._handle = self._handle, 0
        if handle and _free_generator is not None:
            _free_generator(handle)

    @property
    def handle(self):
        """The raw ag_generator handle (an int)."""
        return self._handle

    def manual_seed(self, seed):
        """Starts the stream again from `seed` (the stream of Generator(seed)); returns self."""
        check(lib.ag_generator_set_state(self._handle, _seed(seed)))
        return self

    def get_state(self):
        """The whole state as an int in 0 .. 2**64 - 1."""
        out = c_uint64(0)
        check(lib.ag_generator_get_state(byref(out), self._handle))
        return out.value

    def set_state(self, state):
        """Sets the state saved by get_state: the draws that followed it are drawn again."""
        check(lib.ag_generator_set_state(self._handle, _seed(state)))
        return self

    def __repr__(self):
        return f"<libautograd.Generator state={self.get_state():#x}>"


def _seed(seed):
    """seed as an int in 0 .. 2**64 - 1 (TypeError for bools, floats and Tensors)."""
    if isinstance(seed, (bool, np.bool_, float, np.floating, Tensor)):
        raise TypeError(f"seed must be an integer, not {type(seed).__name__}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, not {type(seed).__name__}") from None
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed {seed} is outside 0 .. 2**64 - 1")
    return seed


def _generator(generator):
    if not isinstance(generator, Generator):
        raise TypeError("generator must be a libautograd.Generator, not "
                        f"{type(generator).__name__}")
    return generator._handle


def _shape(size):
    """size (an int or a sequence of ints) as a ctypes int64 array and its length."""
    return int64_array(shape_args((size,)), "extent")


def random_uniform(size, low=0.0, high=1.0, *, generator, dtype=None):
    """A new leaf of values uniform in [low, high) drawn from `generator` (float32/float64)."""
    dims, n = _shape(size)
    dt = _dt.default_dtype if dtype is None else _dt.as_dtype(dtype)
    return new_tensor(lib.ag_random_uniform, dims, n, float(low), float(high),
                      _generator(generator), dt.code)


def random_normal(size, mean=0.0, std=1.0, *, generator, dtype=None):
    """A new leaf of normal values (mean, std) drawn from `generator` (float32/float64)."""
    dims, n = _shape(size)
    dt = _dt.default_dtype if dtype is None else _dt.as_dtype(dtype)
    return new_tensor(lib.ag_random_normal, dims, n, float(mean), float(std),
                      _generator(generator), dt.code)


def randint(low, high, size, *, generator):
    """A new int64 leaf of values uniform in low .. high-1 (torch.randint's order of arguments),
    without modulo bias."""
    dims, n = _shape(size)
    return new_tensor(lib.ag_randint, dims, n, as_int(low, "low"), as_int(high, "high"),
                      _generator(generator))


def randperm(n, *, generator):
    """A new int64 leaf holding a random permutation of 0 .. n-1 (for shuffling each epoch)."""
    return new_tensor(lib.ag_randperm, as_int(n, "n"), _generator(generator))


def dropout(x, p=0.5, training=True, *, generator):
    """Inverted dropout: when training and p > 0, each element is zeroed with probability p and
    the others scaled by 1/(1-p); otherwise x's values (a new tensor). The gradient is masked
    and scaled alike."""
    if not _is_real(p):
        raise TypeError(f"p must be a real number, not {type(p).__name__}")
    return new_tensor(lib.ag_dropout, handle_of(x, "x"), float(p), _bool_arg(training, "training"),
                      _generator(generator))


def multinomial(weights, num_samples, replacement=False, *, generator):
    """num_samples int64 category indices drawn by the weights in each row of `weights` ((C) or
    (N, C); finite, >= 0, a positive one per row), as torch.multinomial."""
    return new_tensor(lib.ag_multinomial, handle_of(weights, "weights"),
                      as_int(num_samples, "num_samples"), _bool_arg(replacement, "replacement"),
                      _generator(generator))


__all__ = [
    "to", "to_dtype", "argmax", "argmin", "topk", "one_hot", "embedding", "masked_fill",
    "logical_not", "logical_and", "logical_or", "cross_entropy_labels", "Generator",
    "random_uniform", "random_normal", "randint", "randperm", "dropout", "multinomial", "TopK",
]
