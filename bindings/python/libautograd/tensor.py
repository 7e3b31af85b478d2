"""The Tensor class: a Python object that owns one ag_tensor handle and frees it when collected.

Operators and methods forward to the functions of ``ops``; this module holds what every other
module needs: turning handles into Tensors, validating integer arguments before they reach C,
and the NumPy round trip (one copy each way).
"""

import operator
import sys
from ctypes import byref, c_bool, c_double, c_int32, c_int64, c_uint64

import numpy as np

from . import dtypes as _dt
from ._library import lib
from .errors import InvalidHandleError, check

MAX_NDIM = 8
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# ---------------------------------------------------------------------------------------------
# Argument helpers (Python-side mistakes are TypeError / ValueError before any C call)
# ---------------------------------------------------------------------------------------------


def as_int(value, what):
    """value as a Python int that fits int64; TypeError for floats, strings, tensors."""
    if isinstance(value, (float, np.floating)) or isinstance(value, Tensor):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}") from None
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{what} {v} does not fit in int64")
    return v


def int64_array(values, what):
    """A ctypes int64 array holding `values` (ints) and its length; (None, 0) when empty."""
    vals = [as_int(v, what) for v in values]
    if not vals:
        return None, 0
    return (c_int64 * len(vals))(*vals), len(vals)


def shape_args(args, what="shape"):
    """The shape given as f(2, 3), f((2, 3)) or f([2, 3]) (f() is 0-d), as a tuple of ints."""
    if len(args) == 1 and not isinstance(args[0], (int, np.integer)):
        first = args[0]
        if isinstance(first, Tensor) or not hasattr(first, "__iter__"):
            raise TypeError(f"{what} must be integers or a sequence of integers, "
                            f"not {type(first).__name__}")
        args = tuple(first)
    return tuple(as_int(a, what) for a in args)


def is_scalar(value):
    """Whether value is a real Python or NumPy number (used by the scalar forms)."""
    return isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))


def handle_of(value, what="argument"):
    """The handle of a Tensor argument; TypeError for anything else."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} must be a Tensor, not {type(value).__name__}")
    return value._handle


def new_tensor(fn, *args):
    """Calls an ag_* function whose first parameter is `ag_tensor *out`; wraps the result."""
    out = c_uint64(0)
    check(fn(byref(out), *args))
    return Tensor._wrap(out.value)


def handle_from_numpy(array, dtype=None):
    """A new handle holding a copy of `array` (one copy, made by the library).

    Only when `array` is not C-contiguous, not aligned, or not already of the target dtype
    (in native byte order) is a contiguous converted copy made first.
    """
    want = _dt.for_array(array) if dtype is None else _dt.as_dtype(dtype)
    if array.ndim > MAX_NDIM:
        raise ValueError(f"libautograd tensors have at most {MAX_NDIM} axes, got {array.ndim}")
    if not (array.dtype == want.numpy and array.flags.c_contiguous and array.flags.aligned):
        array = np.array(array, dtype=want.numpy, order="C")
    shape, ndim = int64_array(array.shape, "extent")
    out = c_uint64(0)
    check(lib.ag_tensor_from_data(byref(out), array.ctypes.data, shape, ndim, want.code))
    return out.value


def handle_from_data(data, dtype=None):
    """A new handle from a Tensor, NumPy array, number or nested sequence of numbers."""
    if isinstance(data, Tensor):
        data = data.numpy()
    array = np.asarray(data)
    if array.dtype == object:
        raise TypeError("tensor data must be numbers or (nested) sequences of numbers")
    return handle_from_numpy(array, dtype)


def scalar_tensor(value, dtype):
    """A 0-d tensor holding a Python number, in `dtype`."""
    return new_tensor(lib.ag_tensor_full, None, 0, float(value), _dt.as_dtype(dtype).code)


def coerce(value, like, what="operand"):
    """value as a Tensor of like's dtype: Tensors pass, numbers and array-likes are converted.

    Returns None when value is of a kind that cannot be a tensor (for NotImplemented).
    """
    if isinstance(value, Tensor):
        return value
    if is_scalar(value):
        return scalar_tensor(value, like.dtype)
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(f"{what} must hold numbers, got dtype {array.dtype}")
        return Tensor._wrap(handle_from_numpy(array, like.dtype))
    return None


def _int_index(key, extent):
    i = operator.index(key)
    if not -extent <= i < extent:
        raise IndexError(f"index {i} is out of range for an axis of extent {extent}")
    return i % extent


# ---------------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------------


class Tensor:
    """An N-dimensional float32/float64 array that records operations for reverse-mode autodiff.

    ``Tensor(data, dtype=None, requires_grad=False)`` copies `data` (see ``tensor()``).
    The handle is freed when the object is collected, or earlier by ``free()``.
    """

    _handle = 0  # the ag_tensor handle (uint64)
    _owned = False  # whether this object must free it

    # NumPy hands mixed operations (ndarray + Tensor) to our reflected operators.
    __array_ufunc__ = None
    # __eq__ is elementwise and returns a Tensor, so keep identity hashing deliberately
    # (tensors can be dict keys and set members, as in PyTorch).
    __hash__ = object.__hash__

    def __init__(self, data, dtype=None, requires_grad=False):
        self._handle = handle_from_data(data, dtype)
        self._owned = True
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _wrap(cls, handle, owned=True):
        """A Tensor for a handle the caller gives us (owned: freed on collection)."""
        t = object.__new__(cls)
        t._handle = handle
        t._owned = owned
        return t

    def __del__(self, _is_finalizing=sys.is_finalizing):
        # At interpreter shutdown module globals may be gone and callbacks unsafe: the
        # process is ending and the OS reclaims everything, so do nothing then.
        if not self._owned or _is_finalizing():
            return
        free = _free
        if free is None:
            return
        self._owned = False
        free(self._handle)

    def free(self):
        """Releases the handle now (instead of at collection). Later use of this Tensor raises
        InvalidHandleError, as the C library answers a freed handle."""
        if self._owned:
            self._owned = False
            check(lib.ag_tensor_free(self._handle))

    # ---- inspection ------------------------------------------------------------------------

    @property
    def handle(self):
        """The raw ag_tensor handle (an int), e.g. to pass to other C code."""
        return self._handle

    @property
    def ndim(self):
        """The rank (0 for a scalar)."""
        out = c_int64(0)
        check(lib.ag_tensor_ndim(byref(out), self._handle))
        return out.value

    @property
    def shape(self):
        """The extents as a tuple of ints."""
        buf = (c_int64 * MAX_NDIM)()
        check(lib.ag_tensor_shape(buf, MAX_NDIM, self._handle))
        return tuple(buf[: self.ndim])

    @property
    def size(self):
        """The number of elements (as numpy's ndarray.size)."""
        return self.numel()

    def numel(self):
        """The number of elements (1 for a scalar)."""
        out = c_int64(0)
        check(lib.ag_tensor_numel(byref(out), self._handle))
        return out.value

    @property
    def dtype(self):
        """libautograd.float32 or libautograd.float64."""
        out = c_int32(0)
        check(lib.ag_tensor_dtype(byref(out), self._handle))
        return _dt.from_code(out.value)

    def __len__(self):
        shape = self.shape
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def item(self):
        """The single element of a one-element tensor as a Python float."""
        out = c_double(0.0)
        check(lib.ag_tensor_item(byref(out), self._handle))
        return out.value

    def __float__(self):
        return self.item()

    def __bool__(self):
        if self.numel() != 1:
            raise ValueError("the truth value of a tensor with more than one element is "
                             "ambiguous (use .numpy().any() or .all())")
        return self.item() != 0.0

    def numpy(self):
        """A new NumPy array holding a copy of the values, in the tensor's dtype.

        Allocated with np.empty and filled by ag_tensor_copy_data: one copy, no sharing.
        """
        dtype = self.dtype
        array = np.empty(self.shape, dtype=dtype.numpy)
        check(lib.ag_tensor_copy_data(array.ctypes.data, array.size, dtype.code, self._handle))
        return array

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def tolist(self):
        """The values as (nested) Python lists, or a float for a 0-d tensor."""
        return self.numpy().tolist()

    def __repr__(self):
        try:
            values = self.numpy()
            dtype = self.dtype
            requires_grad = self.requires_grad
        except InvalidHandleError:
            return f"<libautograd.Tensor: handle {self._handle:#x} is not live>"
        body = np.array2string(values, separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if requires_grad else ""
        return f"tensor({body}, dtype={dtype}{extra})"

    # ---- autograd --------------------------------------------------------------------------

    @property
    def requires_grad(self):
        """Whether gradients flow to this tensor. Settable on leaves only (StateError else)."""
        out = c_bool(False)
        check(lib.ag_tensor_requires_grad(byref(out), self._handle))
        return out.value

    @requires_grad.setter
    def requires_grad(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"requires_grad must be a bool, not {type(value).__name__}")
        check(lib.ag_tensor_set_requires_grad(self._handle, bool(value)))

    def requires_grad_(self, requires_grad=True):
        """Sets requires_grad and returns self (for chaining: ag.zeros(3).requires_grad_())."""
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self):
        """The gradient accumulated in this leaf by backward (a snapshot Tensor), or None."""
        out = c_uint64(0)
        check(lib.ag_tensor_grad(byref(out), self._handle))
        return Tensor._wrap(out.value) if out.value else None

    @grad.setter
    def grad(self, value):
        if value is not None:
            raise TypeError("only None can be assigned to .grad (it clears the gradient)")
        self.zero_grad()

    def zero_grad(self):
        """Clears the accumulated gradient (afterwards .grad is None)."""
        check(lib.ag_tensor_zero_grad(self._handle))

    def backward(self, grad=None, retain_graph=False, create_graph=False):
        """Accumulates d(self)/d(leaf) into every leaf's .grad.

        grad: the seed, needed unless self has one element (a Tensor or array-like of self's
        shape). retain_graph: allow another backward through this graph. create_graph: record
        the backward pass so gradients can be differentiated again.
        """
        seed = None if grad is None else coerce(grad, self, "grad")
        if grad is not None and seed is None:
            raise TypeError(f"grad must be a Tensor or array-like, not {type(grad).__name__}")
        check(lib.ag_backward(self._handle, 0 if seed is None else seed._handle,
                              bool(retain_graph), bool(create_graph)))

    def detach(self):
        """A new leaf sharing these values, with no history, not requiring grad."""
        return new_tensor(lib.ag_detach, self._handle)

    def register_hook(self, fn):
        """Calls fn(grad) with the gradient flowing into this tensor during backward / grad.

        fn may return a Tensor of the same shape and dtype to replace the gradient, or None.
        An exception in fn aborts the backward pass with CallbackError (fn's exception as
        its __cause__). Returns a handle whose remove() unregisters the hook.
        """
        from .hooks import register_hook

        return register_hook(self, fn)

    # ---- arithmetic operators ----------------------------------------------------------------

    def _arith(self, other, tensor_fn, scalar_fn, reflected):
        if is_scalar(other):
            if scalar_fn is None:
                return NotImplemented
            return new_tensor(scalar_fn, self._handle, float(other))
        other = coerce(other, self)
        if other is None:
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        return new_tensor(tensor_fn, a._handle, b._handle)

    def __add__(self, other):
        return self._arith(other, lib.ag_add, lib.ag_add_scalar, False)

    def __radd__(self, other):
        return self._arith(other, lib.ag_add, lib.ag_add_scalar, True)

    def __sub__(self, other):
        return self._arith(other, lib.ag_sub, lib.ag_sub_scalar, False)

    def __rsub__(self, other):
        return self._arith(other, lib.ag_sub, lib.ag_rsub_scalar, True)

    def __mul__(self, other):
        return self._arith(other, lib.ag_mul, lib.ag_mul_scalar, False)

    def __rmul__(self, other):
        return self._arith(other, lib.ag_mul, lib.ag_mul_scalar, True)

    def __truediv__(self, other):
        return self._arith(other, lib.ag_div, lib.ag_div_scalar, False)

    def __rtruediv__(self, other):
        return self._arith(other, lib.ag_div, lib.ag_rdiv_scalar, True)

    def __pow__(self, other, modulo=None):
        if modulo is not None:
            return NotImplemented
        return self._arith(other, lib.ag_pow, lib.ag_pow_scalar, False)

    def __rpow__(self, other):
        return self._arith(other, lib.ag_pow, lib.ag_rpow_scalar, True)

    def __matmul__(self, other):
        return self._arith(other, lib.ag_matmul, None, False)

    def __rmatmul__(self, other):
        return self._arith(other, lib.ag_matmul, None, True)

    def __neg__(self):
        return new_tensor(lib.ag_neg, self._handle)

    def __pos__(self):
        return self

    def __abs__(self):
        return new_tensor(lib.ag_abs, self._handle)

    # ---- comparisons (elementwise, 0/1 in self's dtype, no gradient) ----------------------------

    def _compare(self, other, fn):
        other = coerce(other, self)
        if other is None:
            return NotImplemented
        return new_tensor(fn, self._handle, other._handle)

    def __eq__(self, other):
        return self._compare(other, lib.ag_eq)

    def __ne__(self, other):
        return self._compare(other, lib.ag_ne)

    def __lt__(self, other):
        return self._compare(other, lib.ag_lt)

    def __le__(self, other):
        return self._compare(other, lib.ag_le)

    def __gt__(self, other):
        return self._compare(other, lib.ag_gt)

    def __ge__(self, other):
        return self._compare(other, lib.ag_ge)

    # ---- indexing ----------------------------------------------------------------------------

    def __getitem__(self, key):
        """Basic indexing: ints, slices (any non-zero step), None, Ellipsis, and 1-D integer
        sequences on one axis (index_select). The result is a new tensor with gradients."""
        if not isinstance(key, tuple):
            key = (key,)
        ndim = self.ndim
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        used = sum(1 for k in key if k is not None and k is not Ellipsis)
        if used > ndim:
            raise IndexError(f"too many indices for a tensor of rank {ndim}: {used}")
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (ndim - used) + key[at + 1:]
        shape = self.shape
        out, axis, dim = self, 0, 0
        for k in key:
            if k is None:
                out = _ops.unsqueeze(out, axis)
                axis += 1
                continue
            extent = shape[dim]
            dim += 1
            if isinstance(k, slice):
                start, stop, step = k.indices(extent)
                if step > 0:
                    if (start, stop, step) != (0, extent, 1):
                        out = _ops.slice(out, axis, start, stop, step)
                else:
                    out = _ops.index_select(out, axis, list(range(start, stop, step)))
                axis += 1
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                i = _int_index(k, extent)
                out = _ops.squeeze(_ops.slice(out, axis, i, i + 1, 1), axis)
            elif isinstance(k, (list, np.ndarray, Tensor)):
                out = _ops.index_select(out, axis, k)
                axis += 1
            else:
                raise TypeError(f"unsupported index {k!r}: use ints, slices, None, ... or a "
                                "1-D sequence of ints")
        return out

    # ---- operations as methods (see ops for the documentation) ---------------------------------

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def relu(self):
        return _ops.relu(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def abs(self):
        return _ops.abs(self)

    def sin(self):
        return _ops.sin(self)

    def cos(self):
        return _ops.cos(self)

    def tanh(self):
        return _ops.tanh(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def gelu(self):
        return _ops.gelu(self)

    def softplus(self):
        return _ops.softplus(self)

    def leaky_relu(self, negative_slope=0.01):
        return _ops.leaky_relu(self, negative_slope)

    def neg(self):
        return _ops.neg(self)

    def sum(self, axis=None, keepdim=False):
        return _ops.sum(self, axis, keepdim)

    def mean(self, axis=None, keepdim=False):
        return _ops.mean(self, axis, keepdim)

    def max(self, axis=None, keepdim=False):
        return _ops.max(self, axis, keepdim)

    def min(self, axis=None, keepdim=False):
        return _ops.min(self, axis, keepdim)

    def var(self, axis=None, correction=1, keepdim=False):
        return _ops.var(self, axis, correction, keepdim)

    def logsumexp(self, axis=None, keepdim=False):
        return _ops.logsumexp(self, axis, keepdim)

    def matmul(self, other):
        return _ops.matmul(self, other)

    def dot(self, other):
        return _ops.dot(self, other)

    def outer(self, other):
        return _ops.outer(self, other)

    def pow(self, exponent):
        return _ops.pow(self, exponent)

    def maximum(self, other):
        return _ops.maximum(self, other)

    def minimum(self, other):
        return _ops.minimum(self, other)

    def reshape(self, *shape):
        return _ops.reshape(self, *shape)

    def transpose(self, dim0, dim1):
        return _ops.transpose(self, dim0, dim1)

    @property
    def T(self):
        """The axes reversed (NumPy's .T); a matrix's transpose."""
        return _ops.permute(self, *range(self.ndim - 1, -1, -1))

    def permute(self, *dims):
        return _ops.permute(self, *dims)

    def expand(self, *shape):
        return _ops.expand(self, *shape)

    def squeeze(self, axis=None):
        return _ops.squeeze(self, axis)

    def unsqueeze(self, axis):
        return _ops.unsqueeze(self, axis)

    def slice(self, axis, start=None, stop=None, step=1):
        return _ops.slice(self, axis, start, stop, step)

    def index_select(self, axis, indices):
        return _ops.index_select(self, axis, indices)

    def gather(self, axis, index):
        return _ops.gather(self, axis, index)

    def softmax(self, axis=-1):
        return _ops.softmax(self, axis)

    def log_softmax(self, axis=-1):
        return _ops.log_softmax(self, axis)


_free = lib.ag_tensor_free

from . import ops as _ops  # noqa: E402  (ops imports Tensor from this module)
