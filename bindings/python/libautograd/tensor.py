"""The Tensor class: a Python object that owns one ag_tensor handle and frees it when collected.

Operators and methods forward to the functions of ``ops``; this module holds what every other
module needs: turning handles into Tensors, validating integer arguments before they reach C,
and the NumPy round trip (one copy each way; numpy.from_dlpack and libautograd.from_dlpack share
memory instead); and the Python protocols of a Tensor: numbers
(one-element tensors), NumPy's indexing with masks, in-place updates, copies and pickles.

The handle, its release and the operators come from Tensor's base class: ``_PythonBase`` below
(Python over ctypes), or, with the compiled extension (see ``_accel``), ``_native.TensorBase``,
which does the same in C and falls back to ``_PythonBase``'s operators for what it leaves.
"""

import operator
import sys
from ctypes import byref, c_bool, c_double, c_int32, c_int64, c_uint64, c_void_p

import numpy as np

from . import dtypes as _dt
from ._accel import native as _native
from ._library import lib
from .errors import ERR_STATE, OK, InvalidHandleError, StateError, check
from .grad_mode import is_grad_enabled, no_grad

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
    if want is _dt.int64 and array.dtype.kind == "f":
        # The library converts (truncating toward zero) and refuses nan, inf and values out of
        # int64's range, which NumPy's cast would turn into arbitrary numbers.
        source = Tensor._wrap(handle_from_numpy(array, _dt.float64))
        out = c_uint64(0)
        check(lib.ag_to_dtype(byref(out), source._handle, _dt.int64.code))
        return out.value
    if want is _dt.int64 and array.dtype.kind == "u" and array.size and array.max() > _INT64_MAX:
        raise ValueError(f"{array.max()} does not fit in int64")
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


_FLOAT_INDEX = ("{} is not an index: indices are integers (ints, lists or integer NumPy "
                "arrays) or masks (comparison results such as x > 0, t.bool(), bool arrays or "
                "lists); float indices are refused, also when their values are whole numbers")


def _index_entry(k):
    """One entry of an index key as (kind, value), kind being "none", "ellipsis", "slice",
    "int" (a Python int), "array" (an int64 ndarray of positions) or "mask" (a bool ndarray).

    A Tensor is an index only when it is a mask (is_mask): libautograd tensors hold floats, and
    a float is never taken as a position (PyTorch and NumPy refuse float indices too).
    """
    if k is None:
        return "none", None
    if k is Ellipsis:
        return "ellipsis", None
    if isinstance(k, slice):
        return "slice", k
    if isinstance(k, (bool, np.bool_)):
        return "mask", np.array(bool(k))  # a 0-d mask: NumPy adds an axis of extent 1 or 0
    if isinstance(k, (int, np.integer)):
        return "int", int(k)
    if isinstance(k, (float, np.floating)):
        raise TypeError(_FLOAT_INDEX.format(f"the float {k!r}"))
    if isinstance(k, Tensor):
        if not k._mask:
            raise TypeError(_FLOAT_INDEX.format(f"a float tensor of shape {k.shape}") +
                            "; to use a 0/1 tensor as a mask, index with t.bool()")
        return "mask", k.numpy() != 0
    if isinstance(k, (list, tuple, np.ndarray)):
        array = np.asarray(k)
        kind = array.dtype.kind
        if kind == "b":
            return "mask", array
        if kind in "iu":
            if array.ndim == 0:
                return "int", int(array)
            if kind == "u" and array.size and array.max() > _INT64_MAX:
                raise IndexError(f"index {array.max()} is out of range")
            return "array", array.astype(np.int64)
        if array.size == 0 and kind == "f" and not isinstance(k, np.ndarray):
            return "array", array.astype(np.int64)  # [] comes out float64: no positions
        if kind == "f":
            raise TypeError(_FLOAT_INDEX.format(f"a float array of dtype {array.dtype}"))
    raise TypeError(f"unsupported index {k!r}: use ints, slices, None, ..., integer lists or "
                    "arrays, or masks")


def _select(out, picks, first_axis, adjacent):
    """NumPy's advanced indexing of `out` by integer position arrays, one per indexed axis.

    picks: (axis, positions) with positions already in range; they broadcast together to B.
    The indexed axes are moved to the front, flattened into one axis, and index_select picks
    the flat positions (so the gradient is summed back into the selected elements, repeated
    ones accumulating); the result has shape B + the other axes, with B moved to first_axis
    when the advanced entries were adjacent in the key (NumPy's rule: else B stays first).
    """
    axes = [axis for axis, _ in picks]
    try:
        arrays = np.broadcast_arrays(*(positions for _, positions in picks))
    except ValueError:
        shapes = " ".join(str(positions.shape) for _, positions in picks)
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together "
                         f"with shapes {shapes}") from None
    shape = out.shape
    rest = [a for a in range(len(shape)) if a not in axes]
    order = axes + rest
    if order != list(range(len(shape))):
        out = _ops.permute(out, *order)
    extents = [shape[a] for a in axes]
    rest_shape = tuple(shape[a] for a in rest)
    flat = np.zeros(arrays[0].shape, dtype=np.int64)
    stride = 1
    for positions, extent in zip(reversed(arrays), reversed(extents)):
        flat += positions * stride
        stride *= extent
    out = _ops.reshape(out, (stride,) + rest_shape)
    out = _ops.index_select(out, 0, flat.reshape(-1))
    out = _ops.reshape(out, flat.shape + rest_shape)
    if adjacent and first_axis > 0:
        nb = flat.ndim
        moved = ([nb + i for i in range(first_axis)] + list(range(nb)) +
                 [nb + i for i in range(first_axis, len(rest_shape))])
        out = _ops.permute(out, *moved)
    return out


def _numpy_key(key):
    """key with masks as bool arrays, for indexing the NumPy copy in __setitem__ (every entry
    is checked as __getitem__ checks it: float indices are refused)."""
    entries = key if isinstance(key, tuple) else (key,)
    converted = []
    for k in entries:
        kind, value = _index_entry(k)
        converted.append(value if kind in ("mask", "array") else k)
    return tuple(converted)


def adopt_if_kept(ref):
    """Called as a callback (hook, gradcheck function) returns: if Python code kept the
    borrowed Tensor it was given (ref, a weak reference, is still alive), that Tensor gets a
    handle of its own, so it stays usable instead of naming a handle the library reclaims.
    The new handle holds the same values in new storage (x * 1, exact), recorded only when
    grad mode is on (a hook under create_graph), as the gradient was. If even that fails (out
    of memory), the kept Tensor answers InvalidHandleError, as before."""
    kept = ref()
    if kept is None or kept._owned:
        return
    out = c_uint64(0)
    if lib.ag_mul_scalar(byref(out), kept._handle, 1.0) == OK:
        kept._handle, kept._owned = out.value, True


def _refuse(message):
    """A StateError raised by the Python layer (AG_ERR_STATE, as the library would)."""
    return StateError(ERR_STATE, message)


# ---------------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------------


def _arith(self, other, tensor_fn, scalar_fn, reflected):
    """self op other (reflected: other op self) on the Python path: the scalar form for a
    number, the tensor form for a Tensor or array-like, NotImplemented for anything else."""
    if is_scalar(other):
        if scalar_fn is None:
            return NotImplemented
        return new_tensor(scalar_fn, self._handle, float(other))
    other = coerce(other, self)
    if other is None:
        return NotImplemented
    a, b = (other, self) if reflected else (self, other)
    return new_tensor(tensor_fn, a._handle, b._handle)


def _compare(self, other, fn):
    """An elementwise comparison on the Python path: a mask (0/1 in self's dtype, no gradient)."""
    other = coerce(other, self)
    if other is None:
        return NotImplemented
    out = c_uint64(0)
    check(fn(byref(out), self._handle, other._handle))
    return Tensor._wrap_mask(out.value)


class _PythonBase:
    """What a Tensor is made of on the pure-Python path: the handle and its release, and the
    operators (``+ - * / ** @``, unary ``-``, ``+``, ``abs()``, comparisons) over ctypes.

    Tensor derives from this class when the compiled extension is not in use (see _accel). With
    it, Tensor derives from ``_native.TensorBase`` instead, which does the same in C and calls
    these operators for every case it does not handle itself (NumPy scalars, array-likes, other
    types), so both paths give the same results, errors and messages.
    """

    _handle = 0  # the ag_tensor handle (uint64)
    _owned = False  # whether this object must free it
    # Whether this tensor is a mask: 0/1 values meant as booleans (libautograd has no bool
    # dtype). Set on comparison results, on & | ^ ~ of masks and on t.bool(); indexing with a
    # mask selects (x[x > 0]); kept by indexing, detach, copies and pickles, by nothing else.
    _mask = False

    @classmethod
    def _wrap(cls, handle, owned=True):
        """A Tensor for a handle the caller gives us (owned: freed on collection)."""
        t = object.__new__(cls)
        t._handle = handle
        t._owned = owned
        return t

    @classmethod
    def _wrap_mask(cls, handle):
        """An owned Tensor for a handle holding 0/1 values, marked as a mask."""
        t = cls._wrap(handle)
        t._mask = True
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

    # ---- arithmetic operators ----------------------------------------------------------------

    def __add__(self, other):
        return _arith(self, other, lib.ag_add, lib.ag_add_scalar, False)

    def __radd__(self, other):
        return _arith(self, other, lib.ag_add, lib.ag_add_scalar, True)

    def __sub__(self, other):
        return _arith(self, other, lib.ag_sub, lib.ag_sub_scalar, False)

    def __rsub__(self, other):
        return _arith(self, other, lib.ag_sub, lib.ag_rsub_scalar, True)

    def __mul__(self, other):
        return _arith(self, other, lib.ag_mul, lib.ag_mul_scalar, False)

    def __rmul__(self, other):
        return _arith(self, other, lib.ag_mul, lib.ag_mul_scalar, True)

    def __truediv__(self, other):
        return _arith(self, other, lib.ag_div, lib.ag_div_scalar, False)

    def __rtruediv__(self, other):
        return _arith(self, other, lib.ag_div, lib.ag_rdiv_scalar, True)

    def __pow__(self, other, modulo=None):
        if modulo is not None:
            return NotImplemented
        return _arith(self, other, lib.ag_pow, lib.ag_pow_scalar, False)

    def __rpow__(self, other):
        return _arith(self, other, lib.ag_pow, lib.ag_rpow_scalar, True)

    def __matmul__(self, other):
        return _arith(self, other, lib.ag_matmul, None, False)

    def __rmatmul__(self, other):
        return _arith(self, other, lib.ag_matmul, None, True)

    def __neg__(self):
        return new_tensor(lib.ag_neg, self._handle)

    def __pos__(self):
        return self

    def __abs__(self):
        return new_tensor(lib.ag_abs, self._handle)

    # ---- comparisons (elementwise, 0/1 in self's dtype, no gradient) ----------------------------

    def __eq__(self, other):
        return _compare(self, other, lib.ag_eq)

    def __ne__(self, other):
        return _compare(self, other, lib.ag_ne)

    def __lt__(self, other):
        return _compare(self, other, lib.ag_lt)

    def __le__(self, other):
        return _compare(self, other, lib.ag_le)

    def __gt__(self, other):
        return _compare(self, other, lib.ag_gt)

    def __ge__(self, other):
        return _compare(self, other, lib.ag_ge)


# With the compiled extension (see _accel), Tensor's handle, its release and the operators of
# _PythonBase are the C type's; without it, _PythonBase's.
_Base = _PythonBase if _native is None else _native.TensorBase


class Tensor(_Base):
    """An N-dimensional array (float32/float64, or int64/bool for indices and masks) that records
    operations on float values for reverse-mode autodiff.

    ``Tensor(data, dtype=None, requires_grad=False)`` copies `data` (see ``tensor()``).
    The handle is freed when the object is collected, or earlier by ``free()``.
    """

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
        """The single element of a one-element tensor as a Python float (an int for int64, a
        bool for bool: exact, also beyond 2**53)."""
        out = c_double(0.0)
        check(lib.ag_tensor_item(byref(out), self._handle))
        dtype = self.dtype
        if dtype is _dt.int64:
            return int(self.numpy().reshape(-1)[0])
        if dtype is _dt.bool_:
            return bool(out.value)
        return out.value

    # ---- the number protocol: one-element tensors behave as their value (as in PyTorch) ------

    def _only_element(self, what):
        """The value of a one-element tensor (any rank), else ValueError naming `what`."""
        n = self.numel()
        if n != 1:
            raise ValueError(f"{what} needs a tensor with exactly one element; this one has {n} "
                             f"(shape {self.shape})")
        return self.item()

    def __float__(self):
        return self._only_element("float()")

    def __int__(self):
        """Truncates toward zero, as int(float): ValueError for nan, OverflowError for inf."""
        return int(self._only_element("int()"))

    def __complex__(self):
        return complex(self._only_element("complex()"))

    def __round__(self, ndigits=None):
        """round(t) is an int and round(t, n) a float, as for a Python float (half to even).
        PyTorch returns a tensor; libautograd has no round operation, and the number is what
        round() is used for (printing, comparing)."""
        value = self._only_element("round()")
        return round(value) if ndigits is None else round(value, ndigits)

    def __index__(self):
        # As PyTorch: only a one-element integer tensor is an index or a count.
        if self.dtype is _dt.int64 and self.numel() == 1:
            return self.item()
        raise TypeError("only one-element integer (int64) tensors can be used as an index or a "
                        f"count (this one is {self.dtype}, shape {self.shape}): use int(t) for "
                        "a one-element float tensor")

    def __bool__(self):
        n = self.numel()
        if n == 0:
            raise ValueError("the truth value of a tensor with no elements is ambiguous")
        if n != 1:
            raise ValueError("the truth value of a tensor with more than one element is "
                             "ambiguous (use .numpy().any() or .all())")
        return self.item() != 0.0

    def __format__(self, spec):
        """A 0-d tensor formats as its value (f"{loss:.4f}"); an empty spec gives str(t); a
        non-empty spec on a tensor with axes is a TypeError, as in PyTorch and NumPy."""
        if not spec:
            return str(self)
        if self.ndim == 0:
            return format(self.item(), spec)
        raise TypeError(f"format spec {spec!r} needs a 0-d tensor; this one has shape "
                        f"{self.shape} (format t.item(), or the values of t.numpy())")

    def __contains__(self, value):
        """Whether any element equals value (a number, or a Tensor broadcast against self)."""
        if not (isinstance(value, Tensor) or is_scalar(value)):
            raise TypeError(f"'in' needs a number or a Tensor, not {type(value).__name__}")
        return bool(np.any((self == value).numpy()))

    def numpy(self):
        """A new NumPy array holding a copy of the values, in the tensor's dtype.

        Allocated with np.empty and filled by ag_tensor_copy_data: one copy, no sharing.
        """
        dtype = self.dtype
        array = np.empty(self.shape, dtype=dtype.numpy)
        check(lib.ag_tensor_copy_data(array.ctypes.data, array.size, dtype.code, self._handle))
        return array

    def __array__(self, dtype=None, copy=None):
        # np.asarray(t) copies (the values then never change under NumPy's feet); copy=False,
        # NumPy 2's "never copy", shares the memory through DLPack, as numpy.from_dlpack(t) does.
        if copy is False:
            if dtype is not None and np.dtype(dtype) != self.dtype.numpy:
                raise ValueError(f"a {self.dtype} Tensor cannot become a {np.dtype(dtype)} array without a copy")
            return np.from_dlpack(self)
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    # DLPack (libautograd.dlpack): zero-copy exchange with NumPy, PyTorch, JAX.

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule over this tensor's memory (no copy unless copy=True), for
        numpy.from_dlpack, torch.from_dlpack and other consumers. A DLPack 1.x capsule when the
        consumer passes max_version >= (1, 0), else the older unversioned one."""
        from . import dlpack

        if stream is not None and stream != -1:
            raise BufferError("libautograd tensors live on the CPU: stream must be None")
        if dl_device is not None and tuple(dl_device) != (dlpack.KDL_CPU, 0):
            raise BufferError(f"libautograd tensors live on the CPU (device (1, 0)), not {tuple(dl_device)}")
        source = self
        if copy:
            source = Tensor._wrap(handle_from_numpy(self.numpy()))
        versioned = max_version is not None and int(max_version[0]) >= 1
        return dlpack.to_capsule(source, versioned)

    def __dlpack_device__(self):
        """(device type, device id) as DLPack names them: (1, 0), the CPU."""
        return (1, 0)

    def mark_modified(self):
        """Records that this tensor's values were written outside libautograd (through a NumPy
        array or torch tensor sharing them by DLPack): graphs that saved the old values then
        refuse a backward instead of mixing old and new values."""
        check(lib.ag_tensor_mark_modified(self._handle))

    def data_ptr(self):
        """The address of the first element (0 for an empty tensor), as torch.Tensor.data_ptr:
        for checking that memory is shared, not for writing."""
        out = c_void_p(0)
        check(lib.ag_tensor_data_ptr(byref(out), self._handle))
        return out.value or 0

    @property
    def _version(self):
        """How many in-place writes the values have had, as far as the library knows (torch's
        Tensor._version)."""
        out = c_int64(0)
        check(lib.ag_tensor_version(byref(out), self._handle))
        return out.value

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
        # "[]" says nothing of an empty tensor's other extents: show them (as torch's size=)
        size = f", size={values.shape}" if values.size == 0 and values.shape != (0,) else ""
        extra = ", requires_grad=True" if requires_grad else ""
        return f"tensor({body}{size}, dtype={dtype}{extra})"

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

    @property
    def is_leaf(self):
        """Whether this tensor has no recorded history (torch.Tensor.is_leaf): made by a
        creator, by detach(), or by an operation that recorded nothing. Only leaves keep .grad
        and can be updated in place."""
        if not self.requires_grad:
            return True
        # The library has no query for this; it refuses to change requires_grad on a result
        # with history (AG_ERR_STATE), and setting a leaf's flag to True, the value it already
        # has, changes nothing. (The refusal replaces ag_last_error(), as any failing call.)
        return lib.ag_tensor_set_requires_grad(self._handle, True) == OK

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
        """A new leaf sharing these values, with no history, not requiring grad (an in-place
        update of either is seen by both)."""
        out = new_tensor(lib.ag_detach, self._handle)
        out._mask = self._mask
        return out

    def register_hook(self, fn):
        """Calls fn(grad) with the gradient flowing into this tensor during backward / grad.

        fn may return a Tensor of the same shape and dtype to replace the gradient, or None.
        An exception in fn aborts the backward pass with CallbackError (fn's exception as
        its __cause__). Returns a handle whose remove() unregisters the hook.
        """
        from .hooks import register_hook

        return register_hook(self, fn)

    def register_post_accumulate_grad_hook(self, fn):
        """Calls fn(leaf) during each backward pass, right after this leaf's gradient for that
        pass has been accumulated into its .grad (PyTorch's hook of the same name).

        It runs once per ``backward()`` in which the leaf receives a gradient, as soon as
        nothing more will flow to it, before the pass goes on to the layers nearer the input;
        so the work it starts (copying the gradient out, a non-blocking all-reduce) overlaps
        the rest of the backward. Other leaves' .grad may not be complete yet. ``ag.grad`` does
        not run it (it touches no .grad). fn gets a Tensor for the leaf, valid during the call
        (read ``leaf.grad``; ``leaf.grad.set_data(...)`` changes the accumulated gradient in
        place), and must return None. A reference kept past the call becomes a detached alias
        of the leaf's values. An exception in fn aborts the backward pass with CallbackError
        (fn's exception as its __cause__; gradients accumulated already stay).
        Raises StateError unless this tensor is a leaf that requires grad. Returns a handle
        whose remove() unregisters the hook.
        """
        from .hooks import register_post_accumulate_grad_hook

        return register_post_accumulate_grad_hook(self, fn)

    # ---- masks: comparison results used as booleans ------------------------------------------

    @property
    def is_mask(self):
        """Whether this tensor is a mask: the 0/1 result of a comparison (x > 0), of & | ^ ~ on
        masks, or of bool(). Indexing with a mask selects the elements where it is 1."""
        return self._mask

    def bool(self):
        """A mask (a new tensor) that is 1 where self is non-zero and 0 elsewhere (torch's
        .bool(), held as 0/1 in self's dtype: libautograd has no bool dtype)."""
        return self != 0

    def _logic(self, other, fn, symbol, reflected=False):
        """&, |, ^ on masks: fn on the 0/1 values (mul, maximum, ne) gives 0/1 again."""
        if not self._mask:
            raise TypeError(f"{symbol} needs masks (comparison results, t.bool(), bool arrays); "
                            "libautograd tensors hold floats, which have no bitwise operations")
        if isinstance(other, (bool, np.bool_)):
            other = scalar_tensor(float(other), self.dtype)
        elif isinstance(other, (list, tuple, np.ndarray)) and np.asarray(other).dtype == np.bool_:
            other = Tensor._wrap(handle_from_numpy(np.asarray(other), self.dtype))
        elif isinstance(other, Tensor):
            if not other._mask:
                raise TypeError(f"{symbol} needs masks on both sides; the other operand is a "
                                "float tensor (use t.bool() to make one a mask)")
        else:
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        out = c_uint64(0)
        check(fn(byref(out), a._handle, b._handle))
        return Tensor._wrap_mask(out.value)

    def __and__(self, other):
        return self._logic(other, lib.ag_mul, "&")

    def __rand__(self, other):
        return self._logic(other, lib.ag_mul, "&", True)

    def __or__(self, other):
        return self._logic(other, lib.ag_maximum, "|")

    def __ror__(self, other):
        return self._logic(other, lib.ag_maximum, "|", True)

    def __xor__(self, other):
        return self._logic(other, lib.ag_ne, "^")

    def __rxor__(self, other):
        return self._logic(other, lib.ag_ne, "^", True)

    def __invert__(self):
        if not self._mask:
            raise TypeError("~ needs a mask (a comparison result, t.bool()); libautograd "
                            "tensors hold floats, which have no bitwise operations")
        out = c_uint64(0)
        check(lib.ag_rsub_scalar(byref(out), self._handle, 1.0))
        return Tensor._wrap_mask(out.value)

    # ---- in-place updates (ag_tensor_copy_) ----------------------------------------------------
    #
    # `x op= y` computes x op y under no_grad with the ordinary operations and writes the
    # result into x's own storage with ag_tensor_copy_, which bumps the storage's version, so a
    # graph that saved the old values refuses a stale backward. Every name bound to x and every
    # tensor sharing its values (detach()) sees the update. Allowed on leaves; on a leaf that
    # requires grad only under no_grad (the hand-written optimizer step); refused, with what to
    # do instead, on results of recorded operations and when an operand requires grad while
    # grad mode is on (nothing would carry its gradient).

    def _check_writable(self, what, operand=None):
        """Raises StateError when an in-place `what` on self (with operand) is not allowed."""
        grad_mode = is_grad_enabled()
        if self.requires_grad:
            if not self.is_leaf:
                raise _refuse(f"in-place {what} on the result of a recorded operation: its "
                              "graph may need the old values. Use the out-of-place form "
                              "(y = y + 1 for y += 1), or update a detach()ed copy")
            if grad_mode:
                raise _refuse(f"in-place {what} on a leaf that requires grad while grad mode "
                              "is on: do a hand-written update inside `with "
                              "libautograd.no_grad():` (with no_grad(): w -= lr * w.grad), or "
                              "use an optimizer (libautograd.SGD, Adam, AdamW)")
        if grad_mode and isinstance(operand, Tensor) and operand.requires_grad:
            raise _refuse(f"in-place {what} with an operand that requires grad while grad mode "
                          "is on: an in-place update records no history, so that operand's "
                          "gradient would be lost. Use the out-of-place form (x = x + y), or "
                          "do the update under no_grad")

    def _write(self, source):
        """Writes source's values (same dtype, broadcast to self's shape) into self."""
        check(lib.ag_tensor_copy_(self._handle, source._handle))

    def _inplace(self, other, compute, what, keeps_mask=False):
        self._check_writable(what, other)
        with no_grad():
            result = compute(self, other)
        if result is NotImplemented:
            return NotImplemented
        self._write(result)
        self._mask = self._mask and keeps_mask
        return self

    def __iadd__(self, other):
        return self._inplace(other, Tensor.__add__, "+=")

    def __isub__(self, other):
        return self._inplace(other, Tensor.__sub__, "-=")

    def __imul__(self, other):
        return self._inplace(other, Tensor.__mul__, "*=")

    def __itruediv__(self, other):
        return self._inplace(other, Tensor.__truediv__, "/=")

    def __ipow__(self, other):
        return self._inplace(other, Tensor.__pow__, "**=")

    def __iand__(self, other):
        return self._inplace(other, Tensor.__and__, "&=", keeps_mask=True)

    def __ior__(self, other):
        return self._inplace(other, Tensor.__or__, "|=", keeps_mask=True)

    def __ixor__(self, other):
        return self._inplace(other, Tensor.__xor__, "^=", keeps_mask=True)

    def __imatmul__(self, other):
        # Without this, `x @= w` would silently rebind x to a new tensor.
        raise TypeError("in-place matrix multiplication is not supported (as in PyTorch): "
                        "write x = x @ w")

    def zero_(self):
        """Sets every element to 0 in place and returns self (see the in-place rules above:
        on a leaf that requires grad, under no_grad)."""
        self._check_writable("zero_()")
        self._write(scalar_tensor(0.0, self.dtype))
        self._mask = False
        return self

    def copy_(self, src):
        """Writes src's values into self in place and returns self. src is a Tensor (of either
        dtype: converted), an array-like or a number, broadcast to self's shape. Records no
        history (see the in-place rules above)."""
        self._check_writable("copy_()", src)
        if isinstance(src, Tensor):
            source = src
            if src.dtype is not self.dtype:
                source = Tensor._wrap(handle_from_numpy(src.numpy(), self.dtype))
        else:
            source = coerce(src, self, "src")
            if source is None:
                raise TypeError(f"copy_ needs a Tensor, an array-like or a number, not "
                                f"{type(src).__name__}")
        self._write(source)
        self._mask = self._mask and isinstance(src, Tensor) and src._mask
        return self

    def set_data(self, data):
        """Writes new values into this leaf in place (ag_tensor_set_data) and returns self.

        data: a Tensor, NumPy array, nested sequence or number of this tensor's shape (or a
        flat sequence of its numel elements, row-major); float32 / float64 data is converted to
        this tensor's dtype by the library, other numbers by NumPy. The rules of copy_ apply (a
        leaf; on one that requires grad, under no_grad), checked by the library (StateError).
        The write bumps the version counter: a graph that saved the old values refuses a stale
        backward, unless re-evaluated first with ``recompute()``. Inside a compiled function's
        capture the data is read once: a replay writes those same values.
        """
        array = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(f"set_data needs numbers, got dtype {array.dtype}")
        shape = self.shape
        numel = 1
        for extent in shape:
            numel *= extent
        if array.shape != shape and not (array.ndim == 1 and array.size == numel):
            raise ValueError(f"set_data: data of shape {array.shape} for a tensor of shape "
                             f"{shape} (give its shape, or a flat sequence of {numel} elements)")
        own = self.dtype
        if own.is_floating_point and array.dtype not in (np.float32, np.float64):
            array = array.astype(own.numpy)
        elif not own.is_floating_point:
            if own is _dt.int64 and array.dtype.kind == "f":
                array = Tensor._wrap(handle_from_numpy(array, _dt.int64)).numpy()  # checked
            array = array.astype(own.numpy, copy=False)
        if not (array.flags.c_contiguous and array.flags.aligned and array.dtype.isnative):
            array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")
        check(lib.ag_tensor_set_data(self._handle, array.ctypes.data, array.size,
                                     _dt.of_array(array).code))
        self._mask = False
        return self

    def to(self, dtype):
        """This tensor's values in `dtype` (ag_to_dtype): float32 <-> float64 is differentiable;
        to int64 truncates toward zero (ArgumentError for nan, inf, out of range); to bool is
        "non-zero"; to its own dtype, a new tensor sharing the values."""
        out = c_uint64(0)
        check(lib.ag_to_dtype(byref(out), self._handle, _dt.as_dtype(dtype).code))
        return Tensor._wrap(out.value)

    @property
    def is_floating_point(self):
        """Whether this tensor holds float32 or float64 values (the dtypes with gradients)."""
        return self.dtype.is_floating_point

    def recompute(self):
        """Re-evaluates this tensor's recorded graph in place from the current values of its
        leaves (ag_recompute) and returns self; see ``libautograd.recompute``."""
        check(lib.ag_recompute(self._handle))
        return self

    def __setitem__(self, key, value):
        """x[key] = value, in place, with NumPy's rules for key (masks included) and value.

        Done on a copy of the values (x.numpy(), NumPy's item assignment, then copy_ back):
        O(numel) per assignment. The in-place rules above apply.
        """
        self._check_writable("item assignment (x[...] = v)", value)
        values = self.numpy()
        values[_numpy_key(key)] = value.numpy() if isinstance(value, Tensor) else value
        self._write(Tensor._wrap(handle_from_numpy(values)))
        self._mask = False

    # ---- copies and pickles ------------------------------------------------------------------

    def _copy_of_values(self):
        """A new leaf holding a copy of the values (bit for bit), dtype and mask flag."""
        out = Tensor._wrap(handle_from_numpy(self.numpy()))
        out._mask = self._mask
        return out

    def __deepcopy__(self, memo):
        """A new tensor with its own handle and a copy of the values, as torch's deepcopy:
        a leaf's requires_grad and .grad (a copy) are kept; a result of a recorded operation is
        refused (copy t.detach() instead). Hooks are not copied."""
        if not self.is_leaf:
            raise _refuse("only leaf tensors can be copied (as in PyTorch): this one is the "
                          "result of a recorded operation; copy t.detach() instead")
        out = self._copy_of_values()
        if self.requires_grad:
            out.requires_grad = True
            grad = self.grad
            if grad is not None:
                # A leaf's .grad can only be set by a backward: seed one with a private copy.
                out.backward(grad._copy_of_values())
        return out

    def __copy__(self):
        """As copy.deepcopy (torch's copy.copy shares the storage; here a copy never shares
        values, so an in-place update of one is not seen by the other)."""
        return self.__deepcopy__({})

    def __reduce__(self):
        """Pickles the values (little-endian bytes), dtype, shape, requires_grad and the mask
        flag, never the handle: the unpickled tensor is a new leaf in any process. As
        torch.save, .grad and history are not kept (a result unpickles as a leaf)."""
        values = self.numpy()
        little = values.astype(values.dtype.newbyteorder("<"), copy=False)
        return (_unpickle, (self.dtype.name, values.shape, little.tobytes(), self.requires_grad,
                            self._mask))

    # ---- indexing ----------------------------------------------------------------------------

    def __getitem__(self, key):
        """NumPy's indexing: ints (negative from the end), slices (any non-zero step), None,
        Ellipsis, integer lists and arrays (several in one key broadcast together and pick
        element-wise, as NumPy's advanced indexing, placing the picked axes as NumPy does), and
        masks (comparison results, t.bool(), bool arrays or lists) that select the elements
        where they are true. Float indices are refused. The result is a new tensor whose
        gradient flows back to the selected elements."""
        entries = [_index_entry(k) for k in (key if isinstance(key, tuple) else (key,))]
        ndim = self.ndim
        if sum(kind == "ellipsis" for kind, _ in entries) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        used = sum(value.ndim if kind == "mask" else 1 for kind, value in entries
                   if kind not in ("none", "ellipsis"))
        if used > ndim:
            raise IndexError(f"too many indices for a tensor of rank {ndim}: {used}")
        advanced = any(kind in ("array", "mask") for kind, _ in entries)
        shape = self.shape
        out, axis, dim = self, 0, 0
        picks, positions = [], []  # (axis, positions) per picked axis; key positions of them
        for at, (kind, k) in enumerate(entries):
            if kind == "none":
                out = _ops.unsqueeze(out, axis)
                axis += 1
                continue
            if kind == "ellipsis":
                span = ndim - used
                axis += span
                dim += span
                continue
            if kind == "mask" and k.ndim == 0:
                # NumPy: a new axis, of which a true mask picks the one element, a false none
                out = _ops.unsqueeze(out, axis)
                picks.append((axis, np.zeros(1 if k else 0, dtype=np.int64)))
                positions.append(at)
                axis += 1
                continue
            if kind == "mask":
                extents = shape[dim:dim + k.ndim]
                if k.shape != extents:
                    raise IndexError(f"boolean index did not match the indexed tensor: mask "
                                     f"shape {k.shape}, extents {extents} at axis {dim}")
                for offset, where in enumerate(np.nonzero(k)):
                    picks.append((axis + offset, where.astype(np.int64)))
                positions.append(at)
                axis += k.ndim
                dim += k.ndim
                continue
            extent = shape[dim]
            dim += 1
            if kind == "slice":
                start, stop, step = k.indices(extent)
                if step > 0:
                    if (start, stop, step) != (0, extent, 1):
                        out = _ops.slice(out, axis, start, stop, step)
                else:
                    out = _ops.index_select(out, axis, list(range(start, stop, step)))
            elif kind == "int":
                i = _int_index(k, extent)
                if not advanced:
                    out = _ops.squeeze(_ops.slice(out, axis, i, i + 1, 1), axis)
                    continue
                picks.append((axis, np.array(i, dtype=np.int64)))  # NumPy: joins the picks
                positions.append(at)
            else:
                if k.size and (k.min() < -extent or k.max() >= extent):
                    bad = k.min() if k.min() < -extent else k.max()
                    raise IndexError(f"index {bad} is out of range for an axis of extent "
                                     f"{extent}")
                picks.append((axis, np.where(k < 0, k + extent, k)))
                positions.append(at)
            axis += 1
        if picks:
            adjacent = positions == list(range(positions[0], positions[0] + len(positions)))
            out = _select(out, picks, picks[0][0], adjacent)
        if self._mask and out is not self:
            out._mask = True
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
if _native is not None:
    # Results of the compiled operators are Tensors; the cases they leave go to _PythonBase's.
    _native.bind(Tensor, _PythonBase)

from . import ops as _ops  # noqa: E402  (ops imports Tensor from this module)


def _unpickle(dtype_name, shape, data, requires_grad, mask):
    """Rebuilds a pickled Tensor (see Tensor.__reduce__) as a new leaf in this process."""
    dtype = _dt.as_dtype(dtype_name)
    values = np.frombuffer(data, dtype=dtype.numpy.newbyteorder("<")).reshape(shape)
    out = Tensor._wrap(handle_from_numpy(values, dtype))
    out._mask = bool(mask)
    if requires_grad:
        out.requires_grad = True
    return out
