"""The operation catalogue of include/autograd.h as functions (Tensor has them as methods too).

Every function returns a new Tensor; when an input requires grad and grad mode is on, the
result records its node in the graph. Binary operations broadcast with NumPy's rules and take
a Python number on either side (the C scalar forms) or an array-like (converted to the other
operand's dtype). Operands must share a dtype: there is no implicit promotion (DTypeError).
"""

import builtins
import operator
from ctypes import POINTER, c_int64, c_uint64

import numpy as np

from . import _accel
from ._library import lib
from .tensor import (
    Tensor,
    as_int,
    coerce,
    handle_of,
    int64_array,
    is_scalar,
    new_tensor,
    shape_args,
)

_INT64_MAX = 2**63 - 1
_P_INT64 = POINTER(c_int64)


# ---- helpers ------------------------------------------------------------------------------------


_METHODS = []


def _method(fn):
    """Marks an operation that is also a Tensor method (x.log1p() for log1p(x)); attached to
    Tensor at the end of this module unless tensor.py defines the method itself. A new op then
    needs only its function here."""
    _METHODS.append(fn)
    return fn



def _axes(axis):
    """(int64 array, count) for an axis argument: None means every axis."""
    if axis is None:
        return None, 0
    if isinstance(axis, (tuple, list)):
        if not axis:
            raise ValueError("axis=() reduces nothing; use axis=None for every axis")
        return int64_array(axis, "axis")
    return int64_array([axis], "axis")


def _int_array(values, what):
    """values (ints, a sequence or an integer array) as a C-contiguous int64 NumPy array of
    the same shape. Floats are refused, also whole-valued ones and Tensors (which hold floats
    only), as PyTorch refuses float indices: a float is never silently taken as a position."""
    if isinstance(values, Tensor):
        if values.dtype.name == "int64":
            return values.numpy()
        raise TypeError(f"{what} must be integers: this Tensor holds {values.dtype}; pass an "
                        "int64 tensor, a list or an integer NumPy array, e.g. "
                        "t.to(libautograd.int64)")
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        pass
    elif array.size == 0 and array.dtype.kind == "f" and not isinstance(values, np.ndarray):
        pass  # an empty list comes out float64
    else:
        raise TypeError(f"{what} must be integers, got dtype {array.dtype}")
    return np.array(array, dtype=np.int64, order="C")


def _ptr(array):
    """An int64 pointer to the array's data, or NULL when it is empty."""
    return array.ctypes.data_as(_P_INT64) if array.size else None


def _unary(fn, x):
    return new_tensor(fn, handle_of(x, "x"))


def _two_tensors(fn, a, b, names=("a", "b")):
    """Calls a binary C function on two operands, at least one a Tensor (numbers and arrays
    are converted to the other's dtype)."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{names[0]} or {names[1]} must be a Tensor, got "
                        f"{type(a).__name__} and {type(b).__name__}")
    like = a if isinstance(a, Tensor) else b
    ca, cb = coerce(a, like, names[0]), coerce(b, like, names[1])
    if ca is None or cb is None:
        bad = a if ca is None else b
        raise TypeError(f"unsupported operand type {type(bad).__name__}")
    return new_tensor(fn, ca._handle, cb._handle)


def _operator(op, a, b):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"an operand must be a Tensor, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    return op(a, b)


# ---- binary arithmetic ----------------------------------------------------------------------


def add(a, b):
    """a + b, broadcasting; either may be a number."""
    return _operator(operator.add, a, b)


def sub(a, b):
    """a - b, broadcasting; either may be a number."""
    return _operator(operator.sub, a, b)


def mul(a, b):
    """a * b elementwise, broadcasting; either may be a number."""
    return _operator(operator.mul, a, b)


def div(a, b):
    """a / b elementwise, broadcasting (IEEE: x/0 is inf or nan); either may be a number."""
    return _operator(operator.truediv, a, b)


def pow(a, b):
    """a ** b elementwise, broadcasting; either may be a number."""
    return _operator(operator.pow, a, b)


def matmul(a, b):
    """Matrix product with NumPy's matmul rules (1-D, 2-D and batched)."""
    return _two_tensors(lib.ag_matmul, a, b)


def _commutative(both, with_scalar, a, b):
    """A commutative binary op: the scalar form when either side is a Python number."""
    if isinstance(a, Tensor) and is_scalar(b):
        return new_tensor(with_scalar, a._handle, float(b))
    if is_scalar(a) and isinstance(b, Tensor):
        return new_tensor(with_scalar, b._handle, float(a))
    return _two_tensors(both, a, b)


def maximum(a, b):
    """The larger of a and b elementwise (ties split the gradient evenly)."""
    return _commutative(lib.ag_maximum, lib.ag_maximum_scalar, a, b)


def minimum(a, b):
    """The smaller of a and b elementwise (ties split the gradient evenly)."""
    return _commutative(lib.ag_minimum, lib.ag_minimum_scalar, a, b)


@_method
def atan2(a, b):
    """The angle of the point (b, a) elementwise, broadcasting (torch.atan2(a, b)); either may
    be a number. The gradient at a = b = 0 is 0 (as PyTorch)."""
    return _two_tensors(lib.ag_atan2, a, b)


def dot(a, b):
    """The inner product of two 1-D tensors of equal length (a 0-d tensor)."""
    return _two_tensors(lib.ag_dot, a, b)


def outer(a, b):
    """The outer product of 1-D tensors: (m) x (n) -> (m, n)."""
    return _two_tensors(lib.ag_outer, a, b)


# ---- comparisons and selection ------------------------------------------------------------------


def _mask_of(result):
    """Marks a comparison's 0/1 result as a mask (Tensor.is_mask) and returns it."""
    result._mask = True
    return result


def eq(a, b):
    """a == b elementwise as 0/1 in the operands' dtype (no gradient); a mask."""
    return _mask_of(_two_tensors(lib.ag_eq, a, b))


def ne(a, b):
    """a != b elementwise as 0/1 (no gradient); a mask."""
    return _mask_of(_two_tensors(lib.ag_ne, a, b))


def lt(a, b):
    """a < b elementwise as 0/1 (no gradient); a mask."""
    return _mask_of(_two_tensors(lib.ag_lt, a, b))


def le(a, b):
    """a <= b elementwise as 0/1 (no gradient); a mask."""
    return _mask_of(_two_tensors(lib.ag_le, a, b))


def gt(a, b):
    """a > b elementwise as 0/1 (no gradient); a mask."""
    return _mask_of(_two_tensors(lib.ag_gt, a, b))


def ge(a, b):
    """a >= b elementwise as 0/1 (no gradient); a mask."""
    return _mask_of(_two_tensors(lib.ag_ge, a, b))


def where(cond, a, b):
    """a where cond is non-zero, else b; all three broadcast. a or b may be a number.
    Gradients flow to a and b, none to cond."""
    like = next((t for t in (a, b, cond) if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError("where needs at least one Tensor argument")
    tensors = [coerce(v, like, name) for v, name in ((cond, "cond"), (a, "a"), (b, "b"))]
    if any(t is None for t in tensors):
        raise TypeError("where: cond, a and b must be Tensors, numbers or array-likes")
    c, ta, tb = tensors
    return new_tensor(lib.ag_where, c._handle, ta._handle, tb._handle)


# ---- unary ------------------------------------------------------------------------------------


def neg(x):
    """-x."""
    return _unary(lib.ag_neg, x)


def exp(x):
    """e ** x."""
    return _unary(lib.ag_exp, x)


def log(x):
    """Natural logarithm (log(0) = -inf, log of a negative number = nan)."""
    return _unary(lib.ag_log, x)


@_method
def log1p(x):
    """log(1 + x), accurate near 0."""
    return _unary(lib.ag_log1p, x)


@_method
def expm1(x):
    """e ** x - 1, accurate near 0."""
    return _unary(lib.ag_expm1, x)


@_method
def erf(x):
    """The error function."""
    return _unary(lib.ag_erf, x)


def relu(x):
    """max(x, 0); its derivative at 0 is 0."""
    return _unary(lib.ag_relu, x)


def sqrt(x):
    """Square root (nan for negative numbers)."""
    return _unary(lib.ag_sqrt, x)


def abs(x):
    """|x|; its derivative at 0 is 0."""
    return _unary(lib.ag_abs, x)


def sin(x):
    """sin(x)."""
    return _unary(lib.ag_sin, x)


def cos(x):
    """cos(x)."""
    return _unary(lib.ag_cos, x)


def tanh(x):
    """tanh(x)."""
    return _unary(lib.ag_tanh, x)


def sigmoid(x):
    """1 / (1 + e^-x), finite with finite gradients for any finite x."""
    return _unary(lib.ag_sigmoid, x)


def gelu(x):
    """The exact GELU x * Phi(x) (PyTorch's default)."""
    return _unary(lib.ag_gelu, x)


def softplus(x):
    """log(1 + e^x), computed stably."""
    return _unary(lib.ag_softplus, x)


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, negative_slope * x otherwise."""
    if not is_scalar(negative_slope):
        raise TypeError("negative_slope must be a number")
    return new_tensor(lib.ag_leaky_relu, handle_of(x, "x"), float(negative_slope))


@_method
def clamp(x, min=None, max=None):
    """x limited to [min, max], as torch.clamp (None: no bound on that side). The gradient
    passes where min <= x <= max, bounds included; a nan bound is an ArgumentError."""
    bounds = []
    for value, name, none in ((min, "min", -float("inf")), (max, "max", float("inf"))):
        if value is None:
            bounds.append(none)
        elif is_scalar(value):
            bounds.append(float(value))
        else:
            raise TypeError(f"clamp: {name} must be a number or None, got {type(value).__name__}")
    return new_tensor(lib.ag_clamp, handle_of(x, "x"), bounds[0], bounds[1])



# ---- reductions --------------------------------------------------------------------------------


def _reduce(fn, x, axis, keepdim):
    axes, n = _axes(axis)
    return new_tensor(fn, handle_of(x, "x"), axes, n, bool(keepdim))


def sum(x, axis=None, keepdim=False):
    """The sum over `axis` (an int, a sequence of ints, or None for every axis)."""
    return _reduce(lib.ag_sum, x, axis, keepdim)


def mean(x, axis=None, keepdim=False):
    """The mean over `axis` (nan over zero elements)."""
    return _reduce(lib.ag_mean, x, axis, keepdim)


def max(x, axis=None, keepdim=False):
    """The largest element over `axis` (ties share the gradient evenly, as torch.amax)."""
    return _reduce(lib.ag_max, x, axis, keepdim)


def min(x, axis=None, keepdim=False):
    """The smallest element over `axis` (ties share the gradient evenly)."""
    return _reduce(lib.ag_min, x, axis, keepdim)


def logsumexp(x, axis=None, keepdim=False):
    """log(sum(exp(x))) over `axis`, computed stably."""
    return _reduce(lib.ag_logsumexp, x, axis, keepdim)


def var(x, axis=None, correction=1, keepdim=False):
    """The variance over `axis` with divisor count - correction (1: sample, as torch.var;
    0: population, as numpy.var)."""
    axes, n = _axes(axis)
    return new_tensor(lib.ag_var, handle_of(x, "x"), axes, n, as_int(correction, "correction"),
                      bool(keepdim))


@_method
def cumsum(x, axis):
    """The cumulative sum along `axis` (torch.cumsum(x, dim=axis)); the result has x's shape."""
    return new_tensor(lib.ag_cumsum, handle_of(x, "x"), as_int(axis, "axis"))


# ---- shape operations ---------------------------------------------------------------------------


def reshape(x, *shape):
    """x with another shape of the same element count; one extent may be -1."""
    dims, n = int64_array(shape_args(shape), "shape")
    return new_tensor(lib.ag_reshape, handle_of(x, "x"), dims, n)


def transpose(x, dim0, dim1):
    """x with axes dim0 and dim1 swapped."""
    return new_tensor(lib.ag_transpose, handle_of(x, "x"), as_int(dim0, "dim0"),
                      as_int(dim1, "dim1"))


def permute(x, *dims):
    """x with its axes reordered: result axis i is x's axis dims[i]."""
    perm, n = int64_array(shape_args(dims, "dims"), "dims")
    return new_tensor(lib.ag_permute, handle_of(x, "x"), perm, n)


def expand(x, *shape):
    """x broadcast to `shape` (-1 keeps an extent); the gradient is summed back."""
    dims, n = int64_array(shape_args(shape), "shape")
    return new_tensor(lib.ag_expand, handle_of(x, "x"), dims, n)


def squeeze(x, axis=None):
    """x without the given extent-1 axes (None: every extent-1 axis)."""
    if axis is None:
        axes, n = None, 0
    elif isinstance(axis, (tuple, list)):
        axes, n = int64_array(axis, "axis")
        if n == 0:
            handle_of(x, "x")
            return x  # no axis named: nothing to remove (numpy.squeeze(axis=()) likewise)
    else:
        axes, n = int64_array([axis], "axis")
    return new_tensor(lib.ag_squeeze, handle_of(x, "x"), axes, n)


def unsqueeze(x, axis):
    """x with a new extent-1 axis at position `axis` of the result."""
    return new_tensor(lib.ag_unsqueeze, handle_of(x, "x"), as_int(axis, "axis"))


def _handles(tensors, what):
    if isinstance(tensors, Tensor) or not hasattr(tensors, "__iter__"):
        raise TypeError(f"{what} must be a sequence of Tensors")
    items = list(tensors)
    hs = [handle_of(t, f"{what}[{i}]") for i, t in enumerate(items)]
    return (c_uint64 * builtins.max(len(hs), 1))(*hs), len(hs), items


def concat(tensors, axis=0):
    """The tensors joined along an existing axis."""
    arr, n, _keep = _handles(tensors, "tensors")
    return new_tensor(lib.ag_concat, arr, n, as_int(axis, "axis"))


cat = concat


def stack(tensors, axis=0):
    """The tensors (all of one shape) stacked along a new axis."""
    arr, n, _keep = _handles(tensors, "tensors")
    return new_tensor(lib.ag_stack, arr, n, as_int(axis, "axis"))


def slice(x, axis, start=None, stop=None, step=1):
    """x[start:stop:step] along `axis` (Python's bounds rules; step must be > 0 here, use
    indexing with a negative step instead)."""
    start = 0 if start is None else as_int(start, "start")
    stop = _INT64_MAX if stop is None else as_int(stop, "stop")
    return new_tensor(lib.ag_slice, handle_of(x, "x"), as_int(axis, "axis"), start, stop,
                      as_int(step, "step"))


def index_select(x, axis, indices):
    """The entries `indices` (a 1-D sequence of ints) of x along `axis`."""
    idx = _int_array(indices, "indices")
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    return new_tensor(lib.ag_index_select, handle_of(x, "x"), as_int(axis, "axis"), _ptr(idx),
                      idx.size)


def gather(x, axis, index):
    """torch.gather: out[i][j] = x[index[i][j]][j] for axis 0; index has x's rank."""
    idx = _int_array(index, "index")
    shape, n = int64_array(idx.shape, "index extent")
    return new_tensor(lib.ag_gather, handle_of(x, "x"), as_int(axis, "axis"),
                      idx.ctypes.data_as(_P_INT64), shape, n)


# ---- neural-network functions ------------------------------------------------------------------


def softmax(x, axis=-1):
    """softmax along `axis` (stable)."""
    return new_tensor(lib.ag_softmax, handle_of(x, "x"), as_int(axis, "axis"))


def log_softmax(x, axis=-1):
    """log(softmax(x)) along `axis`, as x - logsumexp(x)."""
    return new_tensor(lib.ag_log_softmax, handle_of(x, "x"), as_int(axis, "axis"))


def cross_entropy(logits, labels):
    """The batch mean of -log_softmax(logits)[i, labels[i]]; logits (N, C), labels N ints (a
    list, an integer array, or an int64 Tensor: then ag_cross_entropy_labels, which a compiled
    function reads at each call)."""
    if isinstance(labels, Tensor):
        from .indexing_ops import cross_entropy_labels

        return cross_entropy_labels(logits, labels)
    lab = _int_array(labels, "labels")
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {lab.shape}")
    return new_tensor(lib.ag_cross_entropy, handle_of(logits, "logits"), _ptr(lab), lab.size)


def mse_loss(pred, target):
    """mean((pred - target) ** 2) over every element; target may be an array-like."""
    handle_of(pred, "pred")
    return _two_tensors(lib.ag_mse_loss, pred, target, ("pred", "target"))


def linear(x, weight, bias=None):
    """x @ weight.T + bias (PyTorch's linear); bias may be None."""
    b = 0 if bias is None else handle_of(bias, "bias")
    return new_tensor(lib.ag_linear, handle_of(x, "x"), handle_of(weight, "weight"), b)


__all__ = [
    "add", "sub", "mul", "div", "pow", "matmul", "maximum", "minimum", "atan2", "dot", "outer",
    "eq", "ne", "lt", "le", "gt", "ge", "where",
    "neg", "exp", "log", "log1p", "expm1", "erf", "relu", "sqrt", "abs", "sin", "cos", "tanh",
    "sigmoid", "gelu", "softplus", "leaky_relu", "clamp",
    "sum", "mean", "max", "min", "logsumexp", "var", "cumsum",
    "reshape", "transpose", "permute", "expand", "squeeze", "unsqueeze", "concat", "cat",
    "stack", "slice", "index_select", "gather",
    "softmax", "log_softmax", "cross_entropy", "mse_loss", "linear",
]


for _fn in _METHODS:
    if not hasattr(Tensor, _fn.__name__):
        setattr(Tensor, _fn.__name__, _fn)
del _fn


# The compiled fast path (see _accel): with the extension, these functions (and the Tensor
# methods of the same name) are Ops that call the library from C when given a Tensor and no
# further arguments (a reduction over every axis), and the Python function above otherwise.
_COMPILED = ([("unary", name) for name in ("neg", "exp", "log", "log1p", "expm1", "erf", "relu",
                                           "sqrt", "abs", "sin", "cos", "tanh", "sigmoid", "gelu",
                                           "softplus")]
             + [("reduce", name) for name in ("sum", "mean", "max", "min", "logsumexp")]
             + [("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "div"),
                ("pow", "pow")])
for _kind, _name in _COMPILED:
    _c_name = "ag_" + _name if _kind in ("unary", "reduce") else None
    _fast = _accel.op(_kind, globals()[_name], _c_name)
    if _fast is None:
        continue
    globals()[_name] = _fast
    if _name in Tensor.__dict__:  # x.tanh(), x.sum(), x.pow(2): the same Op as a method
        setattr(Tensor, _name, _fast)
del _kind, _name, _c_name, _fast
