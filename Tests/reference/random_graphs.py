#!/usr/bin/env python3
"""Random-graph reference test: libautograd.so against JAX (CPU, float64).

With a fixed master seed this script generates random computation graphs that mix the whole op
catalogue of the C API (include/autograd.h): broadcasting binary ops and their scalar forms,
the unary family, reductions over random axis subsets, shape and indexing ops, dot/outer/matmul,
the neural-network functions, comparisons and where. Every graph has 1-3 leaf inputs that require
grad, 3-10 random ops (plus the small helper ops some of them need, e.g. a positivizing prefix
before log), and ends in the scalar loss sum(out * W) with a fixed random W made by
ag_tensor_rand_normal. The library runs the graph forward and backward through the C API
(ctypes); the same program runs in jax.numpy in float64 and jax.vjp gives the reference
gradients. float32 graphs run in float32 in the library and are compared against JAX in float64
on the same float32-rounded inputs.

Error metric (per tensor: the output `out`, the loss, and every leaf's gradient):
    normwise relative error = max|ours - ref| / max(max|ref|, 1e-300)
A graph passes when every one of its tensors is below the threshold of its dtype:
    1e-10 for float64, 1e-4 for float32.

Inputs are random continuous values. Points where an op is not differentiable, or where float32
rounding could flip a discrete decision, are avoided legitimately: the generator evaluates every
candidate op (numpy, float64) and rejects it when an input is within a margin of a kink
(relu/abs/leaky_relu at 0), of a near-tie (maximum/minimum, max/min reductions, comparisons:
exact ties are allowed, they are ties in both dtypes), outside the domain (log/sqrt/pow bases and
divisors are kept >= 0.2 or made so by a positivizing prefix such as softplus(x) + c, exp(x),
abs(x) + c), in the saturated tails of tanh and sigmoid (whose derivatives 1 - y^2 and s (1 - s)
are rounding noise there), or when a value would exceed 1e4 in magnitude.

Comparing against a threshold is only meaningful for well-conditioned graphs, so before a graph
is used its condition is estimated on the reference: every rounded intermediate value is moved by
a random relative 1e-9 and the relative change of the results, divided by 1e-9, must stay below
1e4 (float64) or 1e2 (float32). Graphs above that (an analytically zero gradient made of rounding
noise, say mean(softmax(x)) over the softmax axis) or with a result outside the dtype's range
(e.g. a gradient of 1e-60 in float32) are redrawn; --verbose lists them.

Separately, a few ops' forward values (and some gradients) are checked on their own against
numpy / jax (gelu via jax.scipy.special.erf and jax.nn.gelu(approximate=False), sigmoid and
softplus at +-1000, gelu's negative tail elementwise, var, logsumexp, softmax, ...).

Capture and replay: every graph's forward, loss, ag_backward and gradients are also captured
once (ag_capture, from the graph's own leaf values) and replayed (ag_function_call) on two new
sets of leaf values (moved by a relative 1e-3; shuffled and moved); every output of each replay
must equal the eager run on the same values bit for bit (a replay runs the same arithmetic).
--no-replay skips this; --replay-only runs only this, on many graphs quickly (no JAX).

Usage: AUTOGRAD_LIB=path/to/libautograd.so python3 Tests/reference/random_graphs.py
       [--graphs N] [--seed S] [--dtype float64|float32|both] [--graph I] [--jobs J] [--verbose]
       [--no-replay | --replay-only]
Every graph's random numbers come from (seed, dtype, index) alone, so `--dtype float32 --graph 17`
rebuilds and dumps graph 17 on its own. Prints one line per failing graph, a summary (worst error
per dtype and per op), and finally "N passed, M failed" (graphs). Exits non-zero on any failure
(graphs or spot checks).
"""

import argparse
import ctypes
import math
import os
import sys
import threading
import warnings
import time
from concurrent.futures import ThreadPoolExecutor
from ctypes import POINTER, byref, c_bool, c_char_p, c_double, c_int32, c_int64, c_uint64, c_void_p

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402
import jax.scipy.special as jsp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB_PATH = os.environ.get("AUTOGRAD_LIB") or os.path.join(REPO, ".build", "release", "libautograd.so")

AG_FLOAT32, AG_FLOAT64 = 1, 2
THRESHOLD = {"float64": 1e-10, "float32": 1e-4}
AG_DTYPE = {"float64": AG_FLOAT64, "float32": AG_FLOAT32}
NP_DTYPE = {"float64": np.float64, "float32": np.float32}

# Graphs whose estimated condition number (Reference.condition) exceeds this are redrawn: their
# results are dominated by cancellation, so rounding alone could exceed the threshold.
MAX_CONDITION = {"float64": 1e4, "float32": 1e2}
MAXN = 256  # largest element count of any intermediate tensor
MAXABS = 1e4  # largest magnitude of any intermediate value

# ---------------------------------------------------------------------------------------------
# The C library through ctypes
# ---------------------------------------------------------------------------------------------

T = c_uint64  # ag_tensor
S = c_int32  # ag_status
PT = POINTER(c_uint64)
PI64 = POINTER(c_int64)

SIGNATURES = {
    "ag_version": (c_char_p, []),
    "ag_last_error": (c_char_p, []),
    "ag_status_name": (c_char_p, [S]),
    "ag_live_handle_count": (S, [PI64]),
    "ag_tensor_from_data": (S, [PT, c_void_p, PI64, c_int64, c_int32]),
    "ag_tensor_rand_normal": (S, [PT, PI64, c_int64, c_double, c_double, c_uint64, c_int32]),
    "ag_tensor_free": (S, [T]),
    "ag_tensor_ndim": (S, [PI64, T]),
    "ag_tensor_shape": (S, [PI64, c_int64, T]),
    "ag_tensor_numel": (S, [PI64, T]),
    "ag_tensor_dtype": (S, [POINTER(c_int32), T]),
    "ag_tensor_copy_data": (S, [c_void_p, c_int64, c_int32, T]),
    "ag_tensor_item": (S, [POINTER(c_double), T]),
    "ag_tensor_set_requires_grad": (S, [T, c_bool]),
    "ag_tensor_grad": (S, [PT, T]),
    "ag_backward": (S, [T, T, c_bool, c_bool]),
    # operations
    "ag_sum": (S, [PT, T, PI64, c_int64, c_bool]),
    "ag_mean": (S, [PT, T, PI64, c_int64, c_bool]),
    "ag_max": (S, [PT, T, PI64, c_int64, c_bool]),
    "ag_min": (S, [PT, T, PI64, c_int64, c_bool]),
    "ag_logsumexp": (S, [PT, T, PI64, c_int64, c_bool]),
    "ag_var": (S, [PT, T, PI64, c_int64, c_int64, c_bool]),
    "ag_leaky_relu": (S, [PT, T, c_double]),
    "ag_clamp": (S, [PT, T, c_double, c_double]),
    "ag_cumsum": (S, [PT, T, c_int64]),
    "ag_reshape": (S, [PT, T, PI64, c_int64]),
    "ag_transpose": (S, [PT, T, c_int64, c_int64]),
    "ag_permute": (S, [PT, T, PI64, c_int64]),
    "ag_expand": (S, [PT, T, PI64, c_int64]),
    "ag_squeeze": (S, [PT, T, PI64, c_int64]),
    "ag_unsqueeze": (S, [PT, T, c_int64]),
    "ag_concat": (S, [PT, PT, c_int64, c_int64]),
    "ag_stack": (S, [PT, PT, c_int64, c_int64]),
    "ag_slice": (S, [PT, T, c_int64, c_int64, c_int64, c_int64]),
    "ag_index_select": (S, [PT, T, c_int64, PI64, c_int64]),
    "ag_gather": (S, [PT, T, c_int64, PI64, PI64, c_int64]),
    "ag_softmax": (S, [PT, T, c_int64]),
    "ag_log_softmax": (S, [PT, T, c_int64]),
    "ag_cross_entropy": (S, [PT, T, PI64, c_int64]),
    "ag_linear": (S, [PT, T, T, T]),
    "ag_where": (S, [PT, T, T, T]),
    "ag_tensor_zeros": (S, [PT, PI64, c_int64, c_int32]),
    "ag_detach": (S, [PT, T]),
    # capture and replay (check_replay); ag_capture's argtypes are set in load_library
    "ag_function_call": (S, [PT, c_int64, T, PT, c_int64]),
    "ag_function_free": (S, [T]),
}
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "atan2"]
SCALAR = ["add_scalar", "sub_scalar", "rsub_scalar", "mul_scalar", "div_scalar", "rdiv_scalar",
          "pow_scalar", "rpow_scalar", "maximum_scalar", "minimum_scalar"]
UNARY = ["neg", "exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "gelu",
         "softplus", "log1p", "expm1", "erf"]
COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]
for _n in BINARY + COMPARE + ["matmul", "dot", "outer", "mse_loss"]:
    SIGNATURES["ag_" + _n] = (S, [PT, T, T])
for _n in SCALAR:
    SIGNATURES["ag_" + _n] = (S, [PT, T, c_double])
for _n in UNARY:
    SIGNATURES["ag_" + _n] = (S, [PT, T])


class AgError(RuntimeError):
    pass


def load_library(path):
    lib = ctypes.CDLL(path)
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    lib.ag_capture.restype = S
    lib.ag_capture.argtypes = [PT, CAPTURE_FN, PT, c_int64, c_int64, c_void_p]
    return lib


LIB = None


def check(status, what):
    if status != 0:
        name = LIB.ag_status_name(status).decode()
        msg = LIB.ag_last_error().decode(errors="replace")
        raise AgError(f"{what} failed: {name}: {msg}")


def i64_array(values):
    values = [int(v) for v in values]
    if not values:
        return None
    return (c_int64 * len(values))(*values)


def live_handles():
    n = c_int64(-1)
    check(LIB.ag_live_handle_count(byref(n)), "ag_live_handle_count")
    return n.value


class Arena:
    """Owns every handle made while building one graph and frees them all at the end."""

    def __init__(self):
        self.handles = []

    def keep(self, h):
        if h:
            self.handles.append(h)
        return h

    def call(self, name, *args):
        out = c_uint64(0)
        check(getattr(LIB, "ag_" + name)(byref(out), *args), "ag_" + name)
        return self.keep(out.value)

    def from_numpy(self, arr, dtype):
        arr = np.array(arr, dtype=NP_DTYPE[dtype], order="C")  # (ascontiguousarray makes 0-d 1-d)
        shape = i64_array(arr.shape)
        return self.call("tensor_from_data", arr.ctypes.data_as(c_void_p), shape, arr.ndim, AG_DTYPE[dtype])

    def free_all(self):
        errors = []
        for h in reversed(self.handles):
            try:
                check(LIB.ag_tensor_free(h), "ag_tensor_free")
            except AgError as e:
                errors.append(str(e))
        self.handles = []
        if errors:
            raise AgError("; ".join(errors))


def to_numpy(h, dtype):
    """The tensor's shape and elements (in `dtype`), read through the C API."""
    nd = c_int64()
    check(LIB.ag_tensor_ndim(byref(nd), h), "ag_tensor_ndim")
    shape = (c_int64 * max(nd.value, 1))()
    check(LIB.ag_tensor_shape(shape, max(nd.value, 1), h), "ag_tensor_shape")
    n = c_int64()
    check(LIB.ag_tensor_numel(byref(n), h), "ag_tensor_numel")
    dt = c_int32()
    check(LIB.ag_tensor_dtype(byref(dt), h), "ag_tensor_dtype")
    if dt.value != AG_DTYPE[dtype]:
        raise AgError(f"result has dtype {dt.value}, expected {AG_DTYPE[dtype]}")
    out = np.empty(n.value, dtype=NP_DTYPE[dtype])
    check(LIB.ag_tensor_copy_data(out.ctypes.data_as(c_void_p), n.value, AG_DTYPE[dtype], h),
          "ag_tensor_copy_data")
    return out.reshape(tuple(shape[i] for i in range(nd.value)))


# ---------------------------------------------------------------------------------------------
# The op catalogue, twice: through the C API (ag_apply) and in numpy / jax.numpy (apply)
# ---------------------------------------------------------------------------------------------

def _axes(p):
    return i64_array(p["axes"]), len(p["axes"])


def ag_apply(A, op, ins, p, dtype="float64"):
    if op in NEW_OPS:
        return ag_apply_new(A, op, ins, p, dtype)
    if op in BINARY or op in COMPARE or op in ("matmul", "dot", "outer", "mse_loss"):
        return A.call(op, ins[0], ins[1])
    if op in SCALAR:
        return A.call(op, ins[0], c_double(p["s"]))
    if op in UNARY:
        return A.call(op, ins[0])
    if op == "leaky_relu":
        return A.call(op, ins[0], c_double(p["slope"]))
    if op == "clamp":
        return A.call(op, ins[0], c_double(p["lo"]), c_double(p["hi"]))
    if op == "cumsum":
        return A.call(op, ins[0], p["axis"])
    if op in ("sum", "mean", "max", "min", "logsumexp"):
        return A.call(op, ins[0], *_axes(p), p["keepdims"])
    if op == "var":
        return A.call(op, ins[0], *_axes(p), p["correction"], p["keepdims"])
    if op in ("reshape", "expand"):
        return A.call(op, ins[0], i64_array(p["shape"]), len(p["shape"]))
    if op == "transpose":
        return A.call(op, ins[0], p["d0"], p["d1"])
    if op == "permute":
        return A.call(op, ins[0], i64_array(p["perm"]), len(p["perm"]))
    if op == "squeeze":
        return A.call(op, ins[0], *_axes(p))
    if op == "unsqueeze":
        return A.call(op, ins[0], p["axis"])
    if op in ("concat", "stack"):
        arr = (c_uint64 * len(ins))(*ins)
        return A.call(op, arr, len(ins), p["axis"])
    if op == "slice":
        return A.call(op, ins[0], p["axis"], p["start"], p["stop"], p["step"])
    if op == "index_select":
        return A.call(op, ins[0], p["axis"], i64_array(p["indices"]), len(p["indices"]))
    if op == "gather":
        idx = np.asarray(p["index"], dtype=np.int64)
        return A.call(op, ins[0], p["axis"], i64_array(idx.ravel()), i64_array(idx.shape), idx.ndim)
    if op in ("softmax", "log_softmax"):
        return A.call(op, ins[0], p["axis"])
    if op == "cross_entropy":
        return A.call(op, ins[0], i64_array(p["labels"]), len(p["labels"]))
    if op == "linear":
        return A.call(op, ins[0], ins[1], ins[2] if len(ins) > 2 else 0)
    if op == "where":
        return A.call(op, ins[0], ins[1], ins[2])
    raise ValueError(op)


def _axis_arg(p):
    return None if not p["axes"] else tuple(p["axes"])


def _expand_shape(shape, target):
    lead = len(target) - len(shape)
    return tuple(shape[i - lead] if t == -1 else t for i, t in enumerate(target))


class NumpyOps:
    """The generator's fast forward evaluation (numpy, float64): used only to choose ops and
    operands (domains, margins, magnitudes), never as the reference."""
    xp = np
    _erf = np.vectorize(math.erf, otypes=[np.float64])

    @staticmethod
    def sigmoid(x):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    @classmethod
    def gelu(cls, x):
        return 0.5 * x * (1.0 + cls._erf(np.asarray(x) / math.sqrt(2.0)))

    @staticmethod
    def softplus(x):
        return np.logaddexp(x, 0.0)

    @classmethod
    def erf(cls, x):
        return cls._erf(np.asarray(x))

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False):
        m = np.max(x, axis=axis, keepdims=True)
        r = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
        return r if keepdims else np.squeeze(r, axis=axis) if axis is not None else r.reshape(())

    @classmethod
    def log_softmax(cls, x, axis):
        return x - cls.logsumexp(x, axis=axis, keepdims=True)

    @classmethod
    def softmax(cls, x, axis):
        return np.exp(cls.log_softmax(x, axis))


class JaxOps:
    """The reference: jax.numpy and jax.nn in float64."""
    xp = jnp
    sigmoid = staticmethod(jax.nn.sigmoid)
    gelu = staticmethod(lambda x: jax.nn.gelu(x, approximate=False))
    softplus = staticmethod(jax.nn.softplus)
    erf = staticmethod(jsp.erf)
    logsumexp = staticmethod(jsp.logsumexp)
    softmax = staticmethod(lambda x, axis: jax.nn.softmax(x, axis=axis))
    log_softmax = staticmethod(lambda x, axis: jax.nn.log_softmax(x, axis=axis))


def apply(op, x, p, B):
    """op on the inputs x with params p, computed with the backend B (NumpyOps or JaxOps)."""
    xp = B.xp
    a = x[0]
    if op in NEW_OPS:
        return apply_new(op, x, p, np if B is NumpyOps else jnp)
    if op in ("add", "sub", "mul", "maximum", "minimum"):
        return getattr(xp, {"add": "add", "sub": "subtract", "mul": "multiply"}.get(op, op))(a, x[1])
    if op == "div":
        return a / x[1]
    if op == "pow":
        return xp.power(a, x[1])
    if op == "atan2":
        return xp.arctan2(a, x[1])
    if op in COMPARE:
        f = {"eq": xp.equal, "ne": xp.not_equal, "lt": xp.less, "le": xp.less_equal,
             "gt": xp.greater, "ge": xp.greater_equal}[op]
        return f(a, x[1]).astype(xp.float64)
    if op in SCALAR:
        s = p["s"]
        return {"add_scalar": lambda: a + s, "sub_scalar": lambda: a - s, "rsub_scalar": lambda: s - a,
                "mul_scalar": lambda: a * s, "div_scalar": lambda: a / s, "rdiv_scalar": lambda: s / a,
                "pow_scalar": lambda: xp.power(a, s), "rpow_scalar": lambda: xp.power(s, a),
                "maximum_scalar": lambda: xp.maximum(a, s),
                "minimum_scalar": lambda: xp.minimum(a, s)}[op]()
    if op == "neg":
        return -a
    if op in ("exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "log1p", "expm1"):
        return getattr(xp, op)(a)
    if op in ("sigmoid", "gelu", "softplus", "erf"):
        return getattr(B, op)(a)
    if op == "clamp":  # the gradient passes at the bounds (torch), which the generator avoids
        return xp.clip(a, p["lo"], p["hi"])
    if op == "cumsum":
        return xp.cumsum(a, axis=p["axis"])
    if op == "relu":  # relu'(0) = 0
        return xp.where(a > 0, a, 0.0)
    if op == "leaky_relu":  # leaky_relu'(0) = negative_slope
        return xp.where(a > 0, a, p["slope"] * a)
    if op in ("sum", "mean", "max", "min"):
        return getattr(xp, op)(a, axis=_axis_arg(p), keepdims=p["keepdims"])
    if op == "logsumexp":
        return B.logsumexp(a, axis=_axis_arg(p), keepdims=p["keepdims"])
    if op == "var":
        return xp.var(a, axis=_axis_arg(p), ddof=p["correction"], keepdims=p["keepdims"])
    if op == "reshape":
        return xp.reshape(a, tuple(p["shape"]))
    if op == "expand":
        return xp.broadcast_to(a, _expand_shape(a.shape, p["shape"]))
    if op == "transpose":
        return xp.swapaxes(a, p["d0"], p["d1"])
    if op == "permute":
        return xp.transpose(a, tuple(p["perm"]))
    if op == "squeeze":
        return xp.squeeze(a, axis=_axis_arg(p))
    if op == "unsqueeze":
        return xp.expand_dims(a, p["axis"])
    if op == "concat":
        return xp.concatenate(x, axis=p["axis"])
    if op == "stack":
        return xp.stack(x, axis=p["axis"])
    if op == "slice":
        ax = p["axis"] % a.ndim
        return a[(slice(None),) * ax + (slice(p["start"], p["stop"], p["step"]),)]
    if op == "index_select":
        ax = p["axis"] % a.ndim
        idx = np.array([i % a.shape[ax] for i in p["indices"]], dtype=np.int64)
        return xp.take(a, idx, axis=ax)
    if op == "gather":
        idx = np.asarray(p["index"], dtype=np.int64)
        ax = p["axis"] % a.ndim
        sl = tuple(slice(None) if d == ax else slice(0, idx.shape[d]) for d in range(a.ndim))
        return xp.take_along_axis(a[sl], idx, axis=ax)
    if op == "matmul":
        return xp.matmul(a, x[1])
    if op == "dot":
        return xp.dot(a, x[1])
    if op == "outer":
        return xp.outer(a, x[1])
    if op == "softmax":
        return B.softmax(a, p["axis"])
    if op == "log_softmax":
        return B.log_softmax(a, p["axis"])
    if op == "cross_entropy":
        lab = np.asarray(p["labels"], dtype=np.int64)
        return -xp.mean(B.log_softmax(a, 1)[np.arange(a.shape[0]), lab])
    if op == "mse_loss":
        return xp.mean((a - x[1]) ** 2)
    if op == "linear":
        y = xp.matmul(a, xp.swapaxes(x[1], 0, 1))
        return y + x[2] if len(x) > 2 else y
    if op == "where":
        return xp.where(a != 0, x[1], x[2])
    raise ValueError(op)


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

def bshape(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def numel(shape):
    return int(np.prod(shape, dtype=np.int64))


def factor_shape(rng, n, max_rank=4):
    """A random shape of `n` elements."""
    primes, m, f = [], n, 2
    while m > 1:
        while m % f == 0:
            primes.append(f)
            m //= f
        f += 1
    rank = int(rng.integers(max(1 if n > 1 else 0, min(len(primes), 1)), max_rank + 1))
    if rank == 0:
        return ()
    dims = [1] * rank
    for q in primes:
        dims[int(rng.integers(rank))] *= q
    return tuple(dims)


def partner_shape(rng, sa):
    """A random shape that broadcasts with sa: same, some axes 1, a suffix, 0-d, new extents where
    sa has 1, extra leading axes."""
    mode = rng.choice(["same", "mixed", "suffix", "scalar"], p=[0.3, 0.45, 0.15, 0.1])
    if mode == "same":
        return tuple(sa)
    if mode == "scalar":
        return ()
    if mode == "suffix":
        return tuple(sa[int(rng.integers(0, len(sa) + 1)):])
    out = []
    for e in sa:
        if e == 1:
            out.append(int(rng.integers(2, 5)) if rng.random() < 0.6 else 1)
        else:
            out.append(1 if rng.random() < 0.4 else e)
    r = rng.random()
    if r < 0.2 and out:
        out = out[int(rng.integers(1, len(out) + 1)):]
    elif r < 0.4 and len(out) < 5:
        out = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 3)))] + out
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# The random program generator
# ---------------------------------------------------------------------------------------------

class Reject(Exception):
    pass


class Gen:
    """Builds a program: a list of (op, input slots, params). Op "leaf" and "const" instructions
    create inputs. Every instruction is evaluated at once (numpy, float64: NumpyOps) so the
    generator can keep away from kinks, ties, domain edges and overflow."""

    def __init__(self, rng, dtype):
        self.rng, self.dtype = rng, dtype
        self.prog, self.vals, self.grad, self.used, self.shapes = [], [], [], [], []
        self.max_leaves = int(rng.integers(1, 4))
        self.n_leaves = 0

    # state -----------------------------------------------------------------------------------
    def checkpoint(self):
        return (len(self.prog), list(self.used), self.n_leaves)

    def rollback(self, cp):
        n, used, nl = cp
        del self.prog[n:], self.vals[n:], self.grad[n:], self.shapes[n:]
        self.used, self.n_leaves = used[:n], nl

    def margin(self, *xs):
        """1e-3 of the largest magnitude among xs (at least 1e-3): far more than float32 rounding
        can move a value."""
        return 1e-3 * max([1.0] + [float(np.max(np.abs(x))) for x in xs if np.size(x)])

    def rnd(self, v):
        """A scalar parameter, rounded to the dtype so both sides use the same number."""
        return float(NP_DTYPE[self.dtype](v))

    # inputs ----------------------------------------------------------------------------------
    def values(self, shape, dist):
        rng = self.rng
        if dist == "normal":
            v = rng.normal(0.0, 1.0, shape) * rng.uniform(0.5, 1.5)
        elif dist == "pos":
            v = rng.uniform(0.5, 2.0, shape)
        elif dist == "away0":
            v = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        elif dist == "exponent":
            v = rng.uniform(-2.0, 2.5, shape)
        elif dist == "mask":
            v = (rng.random(shape) < 0.5).astype(np.float64)
        else:
            raise ValueError(dist)
        return np.asarray(v, dtype=NP_DTYPE[self.dtype]).astype(np.float64)

    def _add(self, op, ins, p, val, grad):
        self.prog.append((op, list(ins), p))
        self.vals.append(val)
        self.grad.append(grad)
        self.used.append(False)
        self.shapes.append(tuple(np.shape(val)))
        for i in ins:
            self.used[i] = True
        return len(self.prog) - 1

    def leaf(self, shape, dist="normal"):
        self.n_leaves += 1
        data = self.values(shape, dist)
        return self._add("leaf", [], {"data": data}, data, True)

    def const(self, shape, dist="normal"):
        data = self.values(shape, dist)
        return self._add("const", [], {"data": data}, data, False)

    def new_input(self, shape, dist="normal"):
        """A fresh leaf while the graph may have more, else (sometimes) a constant."""
        if self.n_leaves < self.max_leaves and self.rng.random() < 0.6:
            return self.leaf(shape, dist)
        return self.const(shape, dist)

    def pool(self, pred=lambda s: True, grad_only=False):
        return [i for i, (op, _, _) in enumerate(self.prog)
                if op not in COMPARE and (self.grad[i] or not grad_only) and pred(i)]

    def pick_existing(self, pred, exclude=None):
        """An existing value satisfying pred, preferring ones no op has used yet."""
        cands = [i for i in self.pool(pred) if i != exclude]
        if not cands:
            return None
        fresh = [i for i in cands if not self.used[i] and self.grad[i]]
        return int(self.rng.choice(fresh if fresh and self.rng.random() < 0.8 else cands))

    def operand(self, shape, dist="normal", cur=None, allow_self=True, value_ok=None):
        """An operand of exactly `shape`: cur itself, an existing value, or a new input."""
        r = self.rng.random()
        if allow_self and cur is not None and self.shapes[cur] == tuple(shape) and r < 0.1:
            if value_ok is None or value_ok(self.vals[cur]):
                return cur
        if r < 0.5:
            e = self.pick_existing(lambda i: self.shapes[i] == tuple(shape)
                                   and (value_ok is None or value_ok(self.vals[i])), exclude=cur)
            if e is not None:
                return e
        return self.new_input(shape, dist)

    def bcast_partner(self, cur, dist="normal", value_ok=None):
        sa = self.shapes[cur]
        if self.rng.random() < 0.4:
            e = self.pick_existing(lambda i: (bshape(sa, self.shapes[i]) is not None
                                              and numel(bshape(sa, self.shapes[i])) <= MAXN
                                              and (value_ok is None or value_ok(self.vals[i]))),
                                   exclude=cur)
            if e is not None:
                return e
        for _ in range(10):
            sb = partner_shape(self.rng, sa)
            if numel(bshape(sa, sb)) <= MAXN:
                return self.new_input(sb, dist)
        return self.new_input(sa, dist)

    # ops ---------------------------------------------------------------------------------------
    def emit(self, op, ins, p):
        val = np.asarray(apply(op, [self.vals[i] for i in ins], p, NumpyOps), dtype=np.float64)
        v = np.asarray(val)
        if v.size == 0 or v.size > MAXN or not np.all(np.isfinite(v)) or np.max(np.abs(v)) > MAXABS:
            raise Reject(op)
        grad = op not in COMPARE and any(self.grad[i] for i in ins)
        return self._add(op, ins, p, val, grad)

    def positive(self, x, lo=0.2):
        """x itself if all its values are >= lo, else x through a positivizing prefix."""
        v = np.asarray(self.vals[x])
        if v.min() >= lo and v.max() <= 50:
            return x
        rng = self.rng
        for _ in range(6):
            kind = rng.choice(["softplus", "exp", "abs", "sigmoid", "square"])
            c = self.rnd(rng.uniform(0.3, 1.0))
            if kind == "exp" and v.max() < 3:
                y = self.emit("exp", [x], {})
                return y if v.min() > -1.5 else self.emit("add_scalar", [y], {"s": c})
            if kind == "abs" and self.away_from(v, 0.0):
                return self.emit("add_scalar", [self.emit("abs", [x], {})], {"s": c})
            if kind == "softplus" and v.max() < 40:
                return self.emit("add_scalar", [self.emit("softplus", [x], {})], {"s": c})
            if kind == "sigmoid":
                return self.emit("add_scalar", [self.emit("sigmoid", [x], {})], {"s": c})
            if kind == "square" and np.abs(v).max() < 7:
                return self.emit("add_scalar", [self.emit("mul", [x, x], {})], {"s": c})
        raise Reject("positive")

    def away_from(self, v, point, allow_exact=True, scale=()):
        """No value of v within a margin (of v and the arrays in scale) of `point`; exactly
        `point` is allowed if allow_exact (an exact tie or zero is one in both dtypes too)."""
        v = np.asarray(v)
        d = np.abs(v - point)
        m = self.margin(v, *scale)
        return bool(np.all((d > m) | ((d == 0) if allow_exact else False)))

    def no_near_ties(self, v, axes):
        """Within every reduced group, the top two (and bottom two) values are either exactly
        equal or a margin apart."""
        v = np.asarray(v)
        nd = v.ndim
        red = sorted({a % nd for a in axes}) if axes else list(range(nd))
        keep = [d for d in range(nd) if d not in red]
        g = np.transpose(v, keep + red).reshape(numel([v.shape[d] for d in keep]), -1)
        if g.shape[1] < 2:
            return True
        s = np.sort(g, axis=1)
        m = self.margin(v)
        for d in (s[:, -1] - s[:, -2], s[:, 1] - s[:, 0]):
            if not np.all((d == 0) | (d > m)):
                return False
        return True

    def rand_axes(self, nd):
        rng = self.rng
        if nd == 0 or rng.random() < 0.2:
            return []
        k = int(rng.integers(1, nd + 1))
        axes = [int(a) for a in rng.permutation(nd)[:k]]
        return [a - nd if rng.random() < 0.3 else a for a in axes]


# Per-op generators. Each takes (G, cur) and returns the new slot, or raises Reject.

def gen_binary(op):
    def g(G, cur):
        rng = G.rng
        if op == "div":
            ok = lambda v: np.all(np.abs(np.asarray(v)) >= 0.3)  # noqa: E731
            b = G.bcast_partner(cur, "away0", value_ok=ok)
            a = cur
            if rng.random() < 0.3:
                a, b = b, G.positive(cur, 0.3) if not ok(G.vals[cur]) else cur
            return G.emit("div", [a, b], {})
        if op == "pow":
            ok = lambda v: np.all(np.abs(np.asarray(v)) <= 2.5)  # noqa: E731
            if rng.random() < 0.3 and ok(G.vals[cur]):  # cur as the exponent
                base = G.positive(G.bcast_partner(cur, "pos"))
                return G.emit("pow", [base, cur], {})
            base = G.positive(cur)
            return G.emit("pow", [base, G.bcast_partner(base, "exponent", value_ok=ok)], {})
        b = G.bcast_partner(cur)
        a = cur
        if rng.random() < 0.4:
            a, b = b, a
        if op in ("maximum", "minimum"):
            va, vb = np.broadcast_arrays(np.asarray(G.vals[a]), np.asarray(G.vals[b]))
            if not G.away_from(va - vb, 0.0, scale=(va, vb)):
                raise Reject(op)
        if op == "atan2":  # away from the origin, where the angle is ill-conditioned
            va, vb = np.broadcast_arrays(np.asarray(G.vals[a]), np.asarray(G.vals[b]))
            if va.size and np.min(np.hypot(va, vb)) < 0.1:
                raise Reject(op)
        return G.emit(op, [a, b], {})
    return g


def gen_scalar(op):
    def g(G, cur):
        rng = G.rng
        v = np.asarray(G.vals[cur])
        x = cur
        if op in ("add_scalar", "sub_scalar", "rsub_scalar"):
            s = rng.normal(0, 2)
        elif op in ("mul_scalar", "div_scalar"):
            s = rng.uniform(0.3, 3) * rng.choice([-1, 1])
        elif op == "rdiv_scalar":
            s = rng.normal(0, 2)
            if not np.all(np.abs(v) >= 0.3):
                x = G.positive(cur, 0.3)
        elif op == "pow_scalar":
            if rng.random() < 0.3 and np.abs(v).max() < 20:  # integer exponent on a signed base
                s = float(rng.choice([2, 3]))
            else:
                s = rng.uniform(-2, 2.5)
                x = G.positive(cur)
        elif op == "rpow_scalar":
            s = rng.uniform(0.3, 3)
            if np.abs(v).max() * abs(math.log(s)) > 8:
                raise Reject(op)
        else:  # maximum/minimum_scalar: a threshold inside the data, away from every value
            for _ in range(5):
                s = G.rnd(rng.uniform(v.min(), v.max()) if v.size > 1 else v.min() + rng.normal())
                if G.away_from(v - s, 0.0, allow_exact=False, scale=(v,)):
                    break
            else:
                raise Reject(op)
        return G.emit(op, [x], {"s": G.rnd(s)})
    return g


def gen_unary(op):
    def g(G, cur):
        v = np.asarray(G.vals[cur])
        if op == "exp" and v.max() > 6:
            raise Reject(op)
        if op in ("sin", "cos") and np.abs(v).max() > 10:
            raise Reject(op)
        # Saturation: the derivatives 1 - tanh(x)^2 and s (1 - s) are computed from the rounded
        # output, so far out they are mostly rounding error (in any implementation).
        f32 = G.dtype == "float32"
        if op == "tanh" and np.abs(v).max() > (3 if f32 else 6):
            raise Reject(op)
        if op == "sigmoid" and v.max() > (5 if f32 else 10):
            raise Reject(op)
        if op in ("log", "sqrt"):
            return G.emit(op, [G.positive(cur)], {})
        if op == "log1p" and v.min() < -0.8:
            return G.emit(op, [G.positive(cur)], {})
        if op == "expm1" and v.max() > 6:
            raise Reject(op)
        p = {}
        if op == "leaky_relu":
            p = {"slope": G.rnd(G.rng.uniform(0.01, 0.3))}
        if op in ("abs", "relu", "leaky_relu") and not G.away_from(v, 0.0):
            raise Reject(op)
        return G.emit(op, [cur], p)
    return g


def g_clamp(G, cur):
    """Bounds inside the data, away from every value (the derivative jumps at a bound); one of
    them may be missing (+-inf)."""
    rng, v = G.rng, np.asarray(G.vals[cur])
    for _ in range(5):
        lo, hi = sorted(G.rnd(rng.uniform(v.min(), v.max()) if v.size > 1 else v.min() + rng.normal())
                        for _ in range(2))
        r = rng.random()
        lo, hi = (-math.inf, hi) if r < 0.25 else (lo, math.inf) if r < 0.5 else (lo, hi)
        if all(not math.isfinite(b) or G.away_from(v - b, 0.0, allow_exact=False, scale=(v,)) for b in (lo, hi)):
            return G.emit("clamp", [cur], {"lo": lo, "hi": hi})
    raise Reject("clamp")


def g_cumsum(G, cur):
    nd = len(G.shapes[cur])
    if nd == 0:
        raise Reject("cumsum")
    return G.emit("cumsum", [cur], {"axis": int(G.rng.integers(-nd, nd))})


def gen_reduction(op):
    def g(G, cur):
        rng = G.rng
        v = np.asarray(G.vals[cur])
        axes = G.rand_axes(v.ndim)
        p = {"axes": axes, "keepdims": bool(rng.random() < 0.5)}
        if op in ("max", "min") and not G.no_near_ties(v, axes):
            raise Reject(op)
        if op == "var":
            p["correction"] = int(rng.integers(0, 2))
            red = sorted({a % v.ndim for a in axes}) if axes else list(range(v.ndim))
            if numel([v.shape[d] for d in red]) <= 1 + p["correction"]:
                raise Reject(op)
            ax = tuple(red)
            var = np.var(v, axis=ax)
            msq = np.mean(v * v, axis=ax)
            if not np.all(var >= 1e-2 * msq):  # keeps float32 cancellation harmless
                raise Reject(op)
        return G.emit(op, [cur], p)
    return g


def g_reshape(G, cur):
    sh = G.shapes[cur]
    new = list(factor_shape(G.rng, numel(sh)))
    if new and G.rng.random() < 0.3:
        new[int(G.rng.integers(len(new)))] = -1
    return G.emit("reshape", [cur], {"shape": new})


def g_transpose(G, cur):
    nd = len(G.shapes[cur])
    if nd < 2:
        raise Reject("transpose")
    d0, d1 = (int(d) for d in G.rng.choice(nd, 2, replace=False))
    return G.emit("transpose", [cur], {"d0": d0 - nd if G.rng.random() < 0.3 else d0, "d1": d1})


def g_permute(G, cur):
    nd = len(G.shapes[cur])
    if nd < 2:
        raise Reject("permute")
    return G.emit("permute", [cur], {"perm": [int(i) for i in G.rng.permutation(nd)]})


def g_expand(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    new = [(int(rng.integers(2, 5)) if e == 1 and rng.random() < 0.7 else (-1 if rng.random() < 0.3 else e))
           for e in sh]
    if rng.random() < 0.4 or all(e != 1 for e in sh):
        new = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 3)))] + new
    if len(new) > 8 or numel(_expand_shape(sh, new)) > MAXN:
        raise Reject("expand")
    return G.emit("expand", [cur], {"shape": new})


def g_squeeze(G, cur):
    sh = G.shapes[cur]
    ones = [i for i, e in enumerate(sh) if e == 1]
    if not ones:
        raise Reject("squeeze")
    if G.rng.random() < 0.3:
        axes = []
    else:
        axes = [int(a) for a in G.rng.permutation(ones)[:int(G.rng.integers(1, len(ones) + 1))]]
        axes = [a - len(sh) if G.rng.random() < 0.3 else a for a in axes]
    return G.emit("squeeze", [cur], {"axes": axes})


def g_unsqueeze(G, cur):
    nd = len(G.shapes[cur])
    if nd >= 8:
        raise Reject("unsqueeze")
    return G.emit("unsqueeze", [cur], {"axis": int(G.rng.integers(-(nd + 1), nd + 1))})


def g_concat(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("concat")
    ax = int(rng.integers(len(sh)))
    ins = [cur]
    for _ in range(int(rng.integers(1, 3))):
        s2 = list(sh)
        s2[ax] = int(rng.integers(1, 4))
        ins.append(G.operand(s2, cur=cur))
    rng.shuffle(ins)
    return G.emit("concat", [int(i) for i in ins], {"axis": ax - len(sh) if rng.random() < 0.3 else ax})


def g_stack(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if len(sh) >= 8:
        raise Reject("stack")
    ins = [cur] + [G.operand(sh, cur=cur) for _ in range(int(rng.integers(1, 3)))]
    rng.shuffle(ins)
    return G.emit("stack", [int(i) for i in ins], {"axis": int(rng.integers(-(len(sh) + 1), len(sh) + 1))})


def g_slice(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("slice")
    ax = int(rng.integers(len(sh)))
    n = sh[ax]
    for _ in range(10):
        step = int(rng.integers(1, 4))
        start = int(rng.integers(-n - 1, n + 1))
        stop = int(rng.integers(-n - 1, n + 3))
        if len(range(n)[start:stop:step]) >= 1:
            return G.emit("slice", [cur], {"axis": ax - len(sh) if rng.random() < 0.3 else ax,
                                           "start": start, "stop": stop, "step": step})
    raise Reject("slice")


def g_index_select(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("index_select")
    ax = int(rng.integers(len(sh)))
    n = sh[ax]
    idx = [int(i) for i in rng.integers(-n, n, int(rng.integers(1, 6)))]
    return G.emit("index_select", [cur], {"axis": ax - len(sh) if rng.random() < 0.3 else ax, "indices": idx})


def g_gather(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("gather")
    ax = int(rng.integers(len(sh)))
    ishape = [int(rng.integers(1, 5)) if d == ax else int(rng.integers(1, e + 1)) for d, e in enumerate(sh)]
    index = rng.integers(0, sh[ax], ishape).astype(np.int64)
    return G.emit("gather", [cur], {"axis": ax - len(sh) if rng.random() < 0.3 else ax, "index": index})


def g_matmul(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("matmul")
    n = lambda: int(rng.integers(1, 5))  # noqa: E731
    r = rng.random()
    if rng.random() < 0.6:  # cur @ b
        k = sh[-1]
        if len(sh) == 1:  # 1-D @ 1-D, 1-D @ 2-D, 1-D @ batched
            bs = (k,) if r < 0.35 else (k, n()) if r < 0.7 else (int(rng.integers(1, 4)), k, n())
        elif r < 0.25:  # N-D @ 1-D
            bs = (k,)
        else:  # N-D @ N-D with broadcast batch axes
            batch = partner_shape(rng, sh[:-2]) if rng.random() < 0.6 else ()
            bs = tuple(batch) + (k, n())
        ins = [cur, G.operand(bs, cur=cur, allow_self=False)]
    else:  # a @ cur
        k = sh[0] if len(sh) == 1 else sh[-2]
        if len(sh) == 1:
            as_ = (k,) if r < 0.35 else (n(), k) if r < 0.7 else (int(rng.integers(1, 4)), n(), k)
        elif r < 0.25:
            as_ = (k,)
        else:
            batch = partner_shape(rng, sh[:-2]) if rng.random() < 0.6 else ()
            as_ = tuple(batch) + (n(), k)
        ins = [G.operand(as_, cur=cur, allow_self=False), cur]
    return G.emit("matmul", ins, {})


def _flatten(G, cur, limit):
    sh = G.shapes[cur]
    if len(sh) == 1:
        return cur
    if numel(sh) > limit:
        raise Reject("flatten")
    return G.emit("reshape", [cur], {"shape": [-1]})


def g_dot(G, cur):
    x = _flatten(G, cur, 64)
    b = G.operand(G.shapes[x], cur=x)
    return G.emit("dot", [x, b] if G.rng.random() < 0.5 else [b, x], {})


def g_outer(G, cur):
    x = _flatten(G, cur, 10)
    b = G.operand((int(G.rng.integers(1, 6)),), cur=x)
    return G.emit("outer", [x, b] if G.rng.random() < 0.5 else [b, x], {})


def not_peaked(G, v, axis):
    """Softmax along axis keeps every probability below 1 - 1e-2 (float32) or 1 - 1e-5 (float64).
    The backward formulas s (g - sum(g s)) and s - onehot lose about eps / (1 - max s) of
    relative accuracy to cancellation (in any implementation), which the threshold must allow."""
    s = NumpyOps.softmax(np.asarray(v), axis)
    return bool(np.max(s) <= 1 - (1e-2 if G.dtype == "float32" else 1e-5))


def g_softmax(op):
    def g(G, cur):
        nd = len(G.shapes[cur])
        if nd == 0:
            raise Reject(op)
        axis = int(G.rng.integers(-nd, nd))
        if not not_peaked(G, G.vals[cur], axis):
            raise Reject(op)
        return G.emit(op, [cur], {"axis": axis})
    return g


def g_cross_entropy(G, cur):
    sh = G.shapes[cur]
    x = cur
    if len(sh) != 2 or sh[1] < 2:
        n = numel(sh)
        cs = [c for c in range(2, n + 1) if n % c == 0]
        if not cs:
            raise Reject("cross_entropy")
        c = int(G.rng.choice(cs))
        x = G.emit("reshape", [cur], {"shape": [n // c, c]})
    N, C = G.shapes[x]
    if not not_peaked(G, G.vals[x], 1):
        raise Reject("cross_entropy")
    labels = [int(v) for v in G.rng.integers(0, C, N)]
    return G.emit("cross_entropy", [x], {"labels": labels})


def g_mse_loss(G, cur):
    t = G.operand(G.shapes[cur], cur=cur, allow_self=False)
    return G.emit("mse_loss", [cur, t] if G.rng.random() < 0.7 else [t, cur], {})


def g_linear(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("linear")
    if len(sh) == 2 and rng.random() < 0.3:  # cur is the weight (out, in)
        o, i = sh
        lead = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 3)))]
        x, w = G.operand(lead + [i], cur=cur, allow_self=False), cur
    else:
        i, o = sh[-1], int(rng.integers(1, 5))
        x, w = cur, G.operand((o, i), cur=cur, allow_self=False)
    ins = [x, w]
    if rng.random() < 0.7:
        ins.append(G.operand((o,), cur=cur, allow_self=False))
    return G.emit("linear", ins, {})


def g_where(G, cur):
    rng = G.rng
    v = np.asarray(G.vals[cur])
    kind = rng.choice(["cmp", "eq", "mask"], p=[0.6, 0.2, 0.2])
    if kind == "mask":
        cond = G.const(partner_shape(rng, G.shapes[cur]), "mask")
    elif kind == "eq":
        # an exact equality that holds in both dtypes: cur == relu(cur) where cur > 0
        if not G.away_from(v, 0.0):
            raise Reject("where")
        other = G.emit("relu", [cur], {})
        cond = G.emit(str(rng.choice(["eq", "ne"])), [cur, other] if rng.random() < 0.5 else [other, cur], {})
    else:
        b = G.bcast_partner(cur)
        va, vb = np.broadcast_arrays(v, np.asarray(G.vals[b]))
        if not G.away_from(va - vb, 0.0, scale=(va, vb)):
            raise Reject("where")
        op = str(rng.choice(["lt", "le", "gt", "ge"]))
        cond = G.emit(op, [cur, b] if rng.random() < 0.5 else [b, cur], {})
    cs = G.shapes[cond]
    for _ in range(5):
        cp = G.checkpoint()
        other = G.bcast_partner(cur)
        bs = bshape(cs, G.shapes[cur], G.shapes[other])
        if bs is not None and numel(bs) <= MAXN:
            break
        G.rollback(cp)
    else:
        raise Reject("where")
    return G.emit("where", [cond, cur, other] if rng.random() < 0.5 else [cond, other, cur], {})


GENERATORS = {}
for _op in BINARY:
    GENERATORS[_op] = gen_binary(_op)
for _op in SCALAR:
    GENERATORS[_op] = gen_scalar(_op)
for _op in UNARY + ["leaky_relu"]:
    GENERATORS[_op] = gen_unary(_op)
for _op in ["sum", "mean", "max", "min", "var", "logsumexp"]:
    GENERATORS[_op] = gen_reduction(_op)
GENERATORS.update({
    "reshape": g_reshape, "transpose": g_transpose, "permute": g_permute, "expand": g_expand,
    "squeeze": g_squeeze, "unsqueeze": g_unsqueeze, "concat": g_concat, "stack": g_stack,
    "slice": g_slice, "index_select": g_index_select, "gather": g_gather,
    "dot": g_dot, "outer": g_outer, "matmul": g_matmul,
    "softmax": g_softmax("softmax"), "log_softmax": g_softmax("log_softmax"),
    "cross_entropy": g_cross_entropy, "mse_loss": g_mse_loss, "linear": g_linear, "where": g_where,
    "clamp": g_clamp, "cumsum": g_cumsum,
})
# ---------------------------------------------------------------------------------------------
# Issue 18's ops: convolution, pooling, normalisation, attention, embedding, masked_fill, topk
# values and float <-> float to_dtype. The reference is jax.lax (conv_general_dilated,
# reduce_window, top_k) and jax.numpy formulas written from PyTorch's definitions; the generator
# evaluates them through jax too (on numpy arrays), never through the library.
# ---------------------------------------------------------------------------------------------

AG_INT64, AG_BOOL = 3, 4
NEW_OPS = ["conv2d", "conv1d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "layer_norm",
           "group_norm", "batch_norm", "attention", "embedding", "masked_fill", "topk", "to_dtype"]
SIGNATURES.update({
    "ag_conv2d": (S, [PT, T, T, T] + [c_int64] * 7),
    "ag_conv1d": (S, [PT, T, T, T] + [c_int64] * 4),
    "ag_max_pool2d": (S, [PT, T] + [c_int64] * 6),
    "ag_avg_pool2d": (S, [PT, T] + [c_int64] * 6 + [c_bool]),
    "ag_adaptive_avg_pool2d": (S, [PT, T, c_int64, c_int64]),
    "ag_layer_norm": (S, [PT, T, c_int64, T, T, c_double]),
    "ag_batch_norm": (S, [PT, T, T, T, T, T, c_bool, c_double, c_double]),
    "ag_group_norm": (S, [PT, T, c_int64, T, T, c_double]),
    "ag_scaled_dot_product_attention": (S, [PT, T, T, T, T, c_bool, c_double]),
    "ag_embedding": (S, [PT, T, T]),
    "ag_masked_fill": (S, [PT, T, T, c_double]),
    "ag_topk": (S, [PT, PT, T, c_int64, c_int64, c_bool]),
    "ag_to_dtype": (S, [PT, T, c_int32]),
})


def _int_tensor(A, arr, dt):
    arr = np.array(arr, dtype=np.int64 if dt == AG_INT64 else np.uint8, order="C")  # (ascontiguousarray makes 0-d 1-d)
    shape = i64_array(arr.shape)
    return A.call("tensor_from_data", arr.ctypes.data_as(c_void_p), shape, arr.ndim, dt)


def ag_apply_new(A, op, ins, p, dtype):
    """The issue-18 ops through the C API (constants they need are made here)."""
    opt = lambda k: ins[k] if len(ins) > k and ins[k] is not None else 0  # noqa: E731
    if op == "conv2d":
        return A.call(op, ins[0], ins[1], opt(2), *p["stride"], *p["pad"], *p["dil"], p["groups"])
    if op == "conv1d":
        return A.call(op, ins[0], ins[1], opt(2), p["stride"][1], p["pad"][1], p["dil"][1], p["groups"])
    if op == "max_pool2d":
        return A.call(op, ins[0], *p["kernel"], *p["stride"], *p["pad"])
    if op == "avg_pool2d":
        return A.call(op, ins[0], *p["kernel"], *p["stride"], *p["pad"], p["cip"])
    if op == "adaptive_avg_pool2d":
        return A.call(op, ins[0], *p["out"])
    if op == "layer_norm":
        return A.call(op, ins[0], p["nd"], opt(1) if p["w"] else 0, opt(2 if p["w"] else 1) if p["b"] else 0,
                      c_double(p["eps"]))
    if op == "group_norm":
        return A.call(op, ins[0], p["groups"], opt(1) if p["w"] else 0, opt(2 if p["w"] else 1) if p["b"] else 0,
                      c_double(p["eps"]))
    if op == "batch_norm":
        rm = rv = 0
        if not p["training"]:
            rm, rv = A.from_numpy(p["rm"], dtype), A.from_numpy(p["rv"], dtype)
        return A.call(op, ins[0], rm, rv, opt(1) if p["w"] else 0, opt(2 if p["w"] else 1) if p["b"] else 0,
                      p["training"], c_double(0.1), c_double(p["eps"]))
    if op == "attention":
        mask = A.from_numpy(p["mask"], dtype) if p["mask"] is not None else 0
        return A.call("scaled_dot_product_attention", ins[0], ins[1], ins[2], mask, p["causal"], c_double(p["scale"]))
    if op == "embedding":
        return A.call(op, _int_tensor(A, p["indices"], AG_INT64), ins[0])
    if op == "masked_fill":
        return A.call(op, ins[0], _int_tensor(A, p["mask"], AG_BOOL), c_double(p["value"]))
    if op == "topk":
        v, i = c_uint64(0), c_uint64(0)
        check(LIB.ag_topk(byref(v), byref(i), ins[0], p["k"], p["axis"], p["largest"]), "ag_topk")
        A.keep(v.value), A.keep(i.value)
        return v.value
    if op == "to_dtype":  # float32 graphs: to float64 and back (exact); float64 graphs: to their own dtype
        mid = A.call(op, ins[0], AG_FLOAT64)
        return A.call(op, mid, AG_FLOAT32) if dtype == "float32" else mid
    raise ValueError(op)


def _jconv(x, w, b, p):
    y = jax.lax.conv_general_dilated(x, w, window_strides=tuple(p["stride"]),
                                     padding=[(p["pad"][0],) * 2, (p["pad"][1],) * 2], rhs_dilation=tuple(p["dil"]),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=p["groups"],
                                     precision=jax.lax.Precision.HIGHEST)
    return y if b is None else y + b[None, :, None, None]


def _np_windows(x, kernel, stride, dil, pad, fill):
    """(patch for each kernel offset) of x (N, C, H, W): the strided views a convolution or a
    pool reads, from x padded with `fill` (numpy: the generator's forward)."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, stride, dil, pad
    xp = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)], constant_values=fill)
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    return [((i, j), xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw])
            for i in range(kh) for j in range(kw)], (oh, ow)


def _np_conv(x, w, b, p):
    g, (O, Cg) = p["groups"], w.shape[:2]
    wins, (oh, ow) = _np_windows(x, w.shape[2:], p["stride"], p["dil"], p["pad"], 0.0)
    out = np.zeros((x.shape[0], O, oh, ow))
    og = O // g
    for gi in range(g):
        for (i, j), patch in wins:
            out[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch[:, gi * Cg:(gi + 1) * Cg],
                                                       w[gi * og:(gi + 1) * og, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def _np_pool(op, a, p):
    k = p["kernel"]
    st = p["stride"] if p["stride"][0] else k
    wins, _ = _np_windows(a, k, st, (1, 1), p["pad"], -np.inf if op == "max_pool2d" else 0.0)
    if op == "max_pool2d":
        return np.max(np.stack([w for _, w in wins]), axis=0)
    s = np.sum(np.stack([w for _, w in wins]), axis=0)
    if p["cip"]:
        return s / (k[0] * k[1])
    ones, _ = _np_windows(np.ones((1, 1) + a.shape[2:]), k, st, (1, 1), p["pad"], 0.0)
    return s / np.sum(np.stack([w for _, w in ones]), axis=0)


def _adaptive_bounds(n, o):
    return [(i * n // o, -((-(i + 1) * n) // o)) for i in range(o)]


def _norm(x, axes, eps, xp=jnp):
    m = xp.mean(x, axis=axes, keepdims=True)
    v = xp.mean((x - m) ** 2, axis=axes, keepdims=True)
    return (x - m) / xp.sqrt(v + eps)


def apply_new(op, x, p, xp=jnp):
    """The issue-18 ops in jax.numpy / jax.lax (float64), from PyTorch's definitions; with
    xp = np the same formulas in numpy (the generator's fast forward, never the reference)."""
    a = xp.asarray(x[0])
    if xp is np and op in ("conv2d", "conv1d"):
        b = np.asarray(x[2]) if len(x) > 2 else None
        if op == "conv2d":
            return _np_conv(a, np.asarray(x[1]), b, p)
        q = dict(p, stride=(1, p["stride"][1]), pad=(0, p["pad"][1]), dil=(1, p["dil"][1]))
        return _np_conv(a[:, :, None, :], np.asarray(x[1])[:, :, None, :], b, q)[:, :, 0, :]
    if xp is np and op in ("max_pool2d", "avg_pool2d"):
        return _np_pool(op, a, p)
    if xp is np and op == "topk":
        t = np.moveaxis(a, p["axis"], -1)
        v = -np.sort(-t, axis=-1)[..., :p["k"]] if p["largest"] else np.sort(t, axis=-1)[..., :p["k"]]
        return np.moveaxis(v, -1, p["axis"])
    if op == "conv2d":
        return _jconv(a, jnp.asarray(x[1]), jnp.asarray(x[2]) if len(x) > 2 else None, p)
    if op == "conv1d":
        q = dict(p, stride=(1, p["stride"][1]), pad=(0, p["pad"][1]), dil=(1, p["dil"][1]))
        b = jnp.asarray(x[2]) if len(x) > 2 else None
        return _jconv(a[:, :, None, :], jnp.asarray(x[1])[:, :, None, :], b, q)[:, :, 0, :]
    if op in ("max_pool2d", "avg_pool2d"):
        kh, kw = p["kernel"]
        sh, sw = p["stride"] if p["stride"][0] else p["kernel"]
        pad = [(0, 0), (0, 0), (p["pad"][0],) * 2, (p["pad"][1],) * 2]
        if op == "max_pool2d":
            return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 1, kh, kw), (1, 1, sh, sw), pad)
        s = jax.lax.reduce_window(a, 0.0, jax.lax.add, (1, 1, kh, kw), (1, 1, sh, sw), pad)
        if p["cip"]:
            return s / (kh * kw)
        cnt = jax.lax.reduce_window(jnp.ones(a.shape[2:]), 0.0, jax.lax.add, (kh, kw), (sh, sw), pad[2:])
        return s / cnt
    if op == "adaptive_avg_pool2d":
        H, W = a.shape[2:]
        rows = [xp.stack([xp.mean(a[:, :, r0:r1, c0:c1], axis=(2, 3)) for c0, c1 in _adaptive_bounds(W, p["out"][1])], -1)
                for r0, r1 in _adaptive_bounds(H, p["out"][0])]
        return xp.stack(rows, -2)
    if op in ("layer_norm", "group_norm", "batch_norm"):
        k = 1
        w = b = None
        if p["w"]:
            w, k = xp.asarray(x[k]), k + 1
        if p["b"]:
            b = xp.asarray(x[k])
        if op == "layer_norm":
            y = _norm(a, tuple(range(a.ndim - p["nd"], a.ndim)), p["eps"], xp)
            return y * (1 if w is None else w) + (0 if b is None else b)
        cshape = (1, a.shape[1]) + (1,) * (a.ndim - 2)
        if op == "group_norm":
            g = p["groups"]
            y = _norm(a.reshape((a.shape[0], g, a.shape[1] // g * numel(a.shape[2:]))), (2,), p["eps"], xp).reshape(a.shape)
        elif p["training"]:
            y = _norm(a, tuple(d for d in range(a.ndim) if d != 1), p["eps"], xp)
        else:
            y = (a - xp.asarray(p["rm"]).reshape(cshape)) / xp.sqrt(xp.asarray(p["rv"]).reshape(cshape) + p["eps"])
        return y * (1 if w is None else w.reshape(cshape)) + (0 if b is None else b.reshape(cshape))
    if op == "attention":
        q, k, v = a, xp.asarray(x[1]), xp.asarray(x[2])
        if k.shape[-2] == 0:  # no keys: zeros (torch >= 2.5)
            return xp.zeros(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]) + (q.shape[-2], v.shape[-1]))
        s = xp.matmul(q, xp.swapaxes(k, -1, -2)) * (p["scale"] or 1 / math.sqrt(q.shape[-1]))
        if p["mask"] is not None:
            s = s + xp.asarray(p["mask"])
        if p["causal"]:
            L, S_ = s.shape[-2:]
            s = xp.where(np.tril(np.ones((L, S_), dtype=bool)), s, -np.inf)
        return xp.matmul((jax.nn.softmax(s, axis=-1) if xp is jnp else NumpyOps.softmax(s, -1)), v)
    if op == "embedding":
        return xp.take(a, np.asarray(p["indices"]), axis=0)
    if op == "masked_fill":
        return xp.where(np.asarray(p["mask"], dtype=bool), p["value"], a)
    if op == "topk":
        t = jnp.moveaxis(a, p["axis"], -1)
        v = jax.lax.top_k(t if p["largest"] else -t, p["k"])[0]
        return jnp.moveaxis(v if p["largest"] else -v, -1, p["axis"])
    if op == "to_dtype":
        return a
    raise ValueError(op)


def _nchw(G, cur, rank):
    """cur itself or reshaped to rank `rank` ((N, C, H, W), (N, C, L), ...)."""
    rng, sh = G.rng, G.shapes[cur]
    if len(sh) == rank and rng.random() < 0.7:
        return cur
    n = numel(sh)
    for _ in range(6):
        shape = factor_shape(rng, n, rank)
        if len(shape) == rank:
            return G.emit("reshape", [cur], {"shape": list(shape)})
    raise Reject("nchw")  # the graph must go on from cur


def g_conv(op):
    def g(G, cur):
        rng = G.rng
        rank = 4 if op == "conv2d" else 3
        x = _nchw(G, cur, rank)
        N, C = G.shapes[x][:2]
        sp = G.shapes[x][2:] if rank == 4 else (1,) + G.shapes[x][2:]
        groups = int(rng.choice([g for g in (1, 2, 3) if C % g == 0]))
        O = groups * int(rng.integers(1, 3))
        k = [int(rng.integers(1, 4)) if rank == 4 else 1, int(rng.integers(1, 4))]
        dil = [int(rng.integers(1, 3)) if rank == 4 else 1, int(rng.integers(1, 3))]
        pad = [int(rng.integers(0, 2)) if rank == 4 else 0, int(rng.integers(0, 2))]
        stride = [int(rng.integers(1, 3)) if rank == 4 else 1, int(rng.integers(1, 3))]
        if any(sp[d] + 2 * pad[d] < dil[d] * (k[d] - 1) + 1 for d in range(2)):
            raise Reject(op)
        wshape = (O, C // groups) + ((k[0], k[1]) if rank == 4 else (k[1],))
        w = G.operand(wshape, cur=x, allow_self=False)
        ins = [x, w] + ([G.operand((O,), cur=x, allow_self=False)] if rng.random() < 0.6 else [])
        return G.emit(op, ins, {"stride": stride, "pad": pad, "dil": dil, "groups": groups})
    return g


def _windows_ok(G, v, kernel, stride, pad):
    """No near ties for the maximum of any window (float32 rounding could change the pick)."""
    v = np.pad(np.asarray(v), [(0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2], constant_values=-np.inf)
    m = G.margin(v[np.isfinite(v)])
    for i in range(0, v.shape[2] - kernel[0] + 1, stride[0]):
        for j in range(0, v.shape[3] - kernel[1] + 1, stride[1]):
            w = np.sort(v[:, :, i:i + kernel[0], j:j + kernel[1]].reshape(v.shape[0], v.shape[1], -1), axis=-1)
            if w.shape[-1] >= 2:
                d = w[..., -1] - w[..., -2]
                if not np.all((d == 0) | (d > m)):
                    return False
    return True


def g_pool(op):
    def g(G, cur):
        rng = G.rng
        x = _nchw(G, cur, 4)
        H, W = G.shapes[x][2:]
        if op == "adaptive_avg_pool2d":
            return G.emit(op, [x], {"out": [int(rng.integers(1, H + 2)), int(rng.integers(1, W + 2))]})
        kernel = [int(rng.integers(1, min(H, 3) + 1)), int(rng.integers(1, min(W, 3) + 1))]
        stride = [0, 0] if rng.random() < 0.3 else [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        pad = [int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1))]
        p = {"kernel": kernel, "stride": stride, "pad": pad, "cip": bool(rng.random() < 0.5)}
        if op == "max_pool2d" and not _windows_ok(G, G.vals[x], kernel, stride if stride[0] else kernel, pad):
            raise Reject(op)
        return G.emit(op, [x], p)
    return g


def _spread_ok(G, v, axes):
    """Groups of at least 3 elements (2 normalise to about +-1 whatever the input: a gradient of
    rounding noise), whose variance is not tiny against their mean square (cancellation)."""
    v = np.asarray(v)
    ax = tuple(range(v.ndim)) if axes is None else axes
    if numel([v.shape[d] for d in ax]) < 3:
        return False
    var, msq = np.var(v, axis=axes), np.mean(v * v, axis=axes)
    return bool(np.all(var >= 5e-2 * msq) and np.all(var > 1e-3))


def g_norm(op):
    def g(G, cur):
        rng = G.rng
        p = {"eps": G.rnd(rng.choice([1e-5, 1e-3, 0.1])), "w": bool(rng.random() < 0.6), "b": bool(rng.random() < 0.6)}
        if op == "layer_norm":
            x = cur
            nd_ = len(G.shapes[x])
            if nd_ == 0:
                raise Reject(op)
            p["nd"] = int(rng.integers(1, min(nd_, 2) + 1))
            pshape = G.shapes[x][nd_ - p["nd"]:]
            axes = tuple(range(nd_ - p["nd"], nd_))
        else:
            x = _nchw(G, cur, int(rng.integers(2, 5)) if op == "batch_norm" else int(rng.integers(3, 5)))
            C = G.shapes[x][1]
            pshape = (C,)
            if op == "group_norm":
                p["groups"] = int(rng.choice([g for g in (1, 2, 3) if C % g == 0]))
                axes = None
            else:
                p["training"] = bool(rng.random() < 0.6)
                axes = tuple(d for d in range(len(G.shapes[x])) if d != 1)
                if p["training"] and numel(G.shapes[x]) // C < 2:
                    raise Reject(op)
                p["rm"] = G.values((C,), "normal")
                p["rv"] = G.values((C,), "pos")
        v = np.asarray(G.vals[x])
        if op == "group_norm":
            if not _spread_ok(G, v.reshape(v.shape[0], p["groups"], -1), (2,)):
                raise Reject(op)
        elif not (op == "batch_norm" and not p["training"]) and not _spread_ok(G, v, axes):
            raise Reject(op)
        ins = [x] + ([G.operand(pshape, cur=x, allow_self=False)] if p["w"] else []) \
            + ([G.operand(pshape, cur=x, allow_self=False)] if p["b"] else [])
        return G.emit(op, ins, p)
    return g


def g_attention(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    q = cur if len(sh) >= 2 and len(sh) <= 4 else _nchw(G, cur, 3)
    *batch, L, E = G.shapes[q]
    S_, Ev = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    kb = tuple(1 if (b > 1 and rng.random() < 0.3) else b for b in batch)
    k = G.operand(kb + (S_, E), cur=q, allow_self=False)
    v = G.operand(tuple(batch) + (S_, Ev), cur=q, allow_self=False)
    p = {"causal": bool(rng.random() < 0.35), "scale": G.rnd(rng.uniform(0.2, 1.0)) if rng.random() < 0.5 else 0.0,
         "mask": None}
    if not p["causal"] and rng.random() < 0.4:
        p["mask"] = G.values((L, S_), "normal")
    if p["causal"] and S_ < L:
        raise Reject("attention")  # a query row with no key: zeros (checked by the ffi cases)
    return G.emit("attention", [q, k, v], p)


def g_embedding(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    w = cur if len(sh) == 2 else _nchw(G, cur, 2)
    V = G.shapes[w][0]
    ishape = tuple(int(rng.integers(0, 4) if rng.random() < 0.15 else rng.integers(1, 4)) for _ in range(int(rng.integers(1, 3))))
    if numel(ishape) == 0:
        ishape = (int(rng.integers(1, 4)),)
    return G.emit("embedding", [w], {"indices": rng.integers(0, V, ishape).astype(np.int64)})


def g_masked_fill(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    mshape = tuple(1 if rng.random() < 0.3 else e for e in sh)[int(rng.integers(0, len(sh) + 1)):]
    return G.emit("masked_fill", [cur], {"mask": (rng.random(mshape) < 0.4).astype(np.uint8),
                                         "value": G.rnd(rng.normal(0, 2))})


def g_topk(G, cur):
    rng, sh = G.rng, G.shapes[cur]
    if not sh:
        raise Reject("topk")
    ax = int(rng.integers(len(sh)))
    k = int(rng.integers(1, sh[ax] + 1))
    largest = bool(rng.random() < 0.6)
    v = np.moveaxis(np.asarray(G.vals[cur]), ax, -1)
    s = np.sort(v, axis=-1)
    if not largest:
        s = -s[..., ::-1]
    s = s[..., ::-1]  # descending
    if k < sh[ax]:  # the k-th and (k+1)-th apart: which elements are picked must not depend on rounding
        d = s[..., k - 1] - s[..., k]
        if not np.all(d > G.margin(v)):
            raise Reject("topk")
    if not G.no_near_ties(np.asarray(G.vals[cur]), [ax]) and k > 1:
        raise Reject("topk")
    return G.emit("topk", [cur], {"k": k, "axis": ax - len(sh) if rng.random() < 0.3 else ax, "largest": largest})


def g_to_dtype(G, cur):
    return G.emit("to_dtype", [cur], {})


NEW_GENERATORS = {"conv2d": g_conv("conv2d"), "conv1d": g_conv("conv1d"), "max_pool2d": g_pool("max_pool2d"),
                  "avg_pool2d": g_pool("avg_pool2d"), "adaptive_avg_pool2d": g_pool("adaptive_avg_pool2d"),
                  "layer_norm": g_norm("layer_norm"), "group_norm": g_norm("group_norm"),
                  "batch_norm": g_norm("batch_norm"), "attention": g_attention, "embedding": g_embedding,
                  "masked_fill": g_masked_fill, "topk": g_topk, "to_dtype": g_to_dtype}
GENERATORS.update(NEW_GENERATORS)

OP_NAMES = sorted(GENERATORS)
# Ops that end in a 0-d tensor are chosen less often, so that most graphs keep real tensors.
# where is chosen more often: each use also draws one of the six comparisons.
# Issue 18's ops are chosen at half weight: their jax references (conv, reduce_window) compile slowest.
WEIGHTS = np.array([0.35 if o in ("dot", "cross_entropy", "mse_loss") else 2.5 if o == "where"
                    else 0.5 if o in NEW_OPS else 1.0 for o in OP_NAMES])
WEIGHTS /= WEIGHTS.sum()


def random_leaf_shape(rng):
    for _ in range(20):
        rank = int(rng.choice([0, 1, 2, 3, 4], p=[0.08, 0.22, 0.35, 0.25, 0.1]))
        shape = tuple(1 if rng.random() < 0.2 else int(rng.integers(2, 6)) for _ in range(rank))
        if numel(shape) <= 64:
            return shape
    return (3,)


def generate(rng, dtype):
    G = Gen(rng, dtype)
    cur = G.leaf(random_leaf_shape(rng))
    target = int(rng.integers(3, 11))
    done, attempts = 0, 0
    while done < target and attempts < 300:
        attempts += 1
        if rng.random() < 0.12:
            cands = G.pool(lambda i: G.grad[i], grad_only=True)
            fresh = [i for i in cands if not G.used[i]]
            cur = int(rng.choice(fresh or cands))
        op = str(rng.choice(OP_NAMES, p=WEIGHTS))
        cp = G.checkpoint()
        try:
            cur = GENERATORS[op](G, cur)
            done += 1
        except Reject:
            G.rollback(cp)
    W = {"shape": G.shapes[cur], "seed": int(rng.integers(1, 2**62))}
    return G, cur, W


# ---------------------------------------------------------------------------------------------
# Running one graph on both sides
# ---------------------------------------------------------------------------------------------

def describe(G, final):
    parts = []
    for op, ins, p in G.prog:
        if op in ("leaf", "const"):
            continue
        parts.append(f"{op}{'x'.join(str(G.shapes[i]).replace(' ', '') for i in ins)}")
    return ", ".join(parts) + f" -> {G.shapes[final]}"


def dump(G, final, out, grads, rout, rgrads):
    """A graph's whole program with the generator's values, then our results and the reference's."""
    np.set_printoptions(precision=17, linewidth=150, threshold=40)
    for k, (op, ins, p) in enumerate(G.prog):
        params = {a: (b.tolist() if isinstance(b, np.ndarray) and a != "data" else b)
                  for a, b in p.items() if a != "data"}
        print(f"    [{k}] {op}{ins} {params} shape {G.shapes[k]}: {np.asarray(G.vals[k]).ravel()}")
    print(f"    output: slot {final}\n    ours out: {np.ravel(out) if out is not None else None}"
          f"\n    ref  out: {np.ravel(rout)}")
    for k, rg in enumerate(rgrads):
        print(f"    ours grad[x{k}]: {np.ravel(grads[k]) if grads else None}\n    ref  grad[x{k}]: {np.ravel(rg)}")


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return math.inf
    if ref.size == 0:
        return 0.0
    d = np.max(np.abs(ours - ref))
    if not np.isfinite(d):
        return math.inf
    return float(d / max(float(np.max(np.abs(ref))), 1e-300))


def make_w(W, dtype):
    """W's values: a seeded ag_tensor_rand_normal, read back through the API."""
    A = Arena()
    try:
        shape = W["shape"]
        return to_numpy(A.call("tensor_rand_normal", i64_array(shape), len(shape), c_double(0.0),
                               c_double(1.0), c_uint64(W["seed"]), AG_DTYPE[dtype]), dtype)
    finally:
        A.free_all()


def build_graph(A, G, final, W, dtype, leaves):
    """The graph's forward and backward on the leaf handles `leaves` (one per "leaf" entry of
    G.prog, requiring grad): constants and W made here, every op through the C API, then
    loss = sum(out * W) and ag_backward. Returns (out, w, loss, gradient handles, None for a
    leaf never backpropagated into); every handle made is kept by the arena A."""
    slots = []
    k = 0
    for op, ins, p in G.prog:
        if op == "leaf":
            h = leaves[k]
            k += 1
        elif op == "const":
            h = A.from_numpy(p["data"], dtype)
        else:
            h = ag_apply(A, op, [slots[i] for i in ins], p, dtype)
        slots.append(h)
    shape = W["shape"]
    w = A.call("tensor_rand_normal", i64_array(shape), len(shape), c_double(0.0), c_double(1.0),
               c_uint64(W["seed"]), AG_DTYPE[dtype])
    loss = A.call("sum", A.call("mul", slots[final], w), None, 0, False)
    check(LIB.ag_backward(loss, 0, False, False), "ag_backward")
    grads = []
    for leaf in leaves:
        g = c_uint64(0)
        check(LIB.ag_tensor_grad(byref(g), leaf), "ag_tensor_grad")
        grads.append(A.keep(g.value) or None)
    return slots[final], w, loss, grads


def leaf_data(G):
    return [p["data"] for op, _, p in G.prog if op == "leaf"]


def run_ours(G, final, W, dtype, data=None):
    """The graph run eagerly on the leaf values `data` (default: the generator's): out, the
    loss, every leaf's gradient (zeros for one never backpropagated into) and W's values."""
    before = live_handles()
    A = Arena()
    try:
        leaves = []
        for d in leaf_data(G) if data is None else data:
            h = A.from_numpy(d, dtype)
            check(LIB.ag_tensor_set_requires_grad(h, True), "ag_tensor_set_requires_grad")
            leaves.append(h)
        out_h, w, loss, grad_hs = build_graph(A, G, final, W, dtype, leaves)
        out = to_numpy(out_h, dtype)
        wv = to_numpy(w, dtype)
        item = c_double()
        check(LIB.ag_tensor_item(byref(item), loss), "ag_tensor_item")
        grads = [np.zeros(np.shape(d)) if g is None else to_numpy(g, dtype)
                 for d, g in zip(leaf_data(G), grad_hs)]
        return out, item.value, grads, wv
    finally:
        A.free_all()
        n = live_handles()
        if n != before:
            raise AgError(f"{n - before} live handles after freeing every handle of the graph")


# ---------------------------------------------------------------------------------------------
# Capture and replay: the graph's forward and gradients captured once (ag_capture), replayed on
# new leaf values (ag_function_call), compared bit for bit with the eager run on those values
# ---------------------------------------------------------------------------------------------

CAPTURE_FN = ctypes.CFUNCTYPE(c_int32, PT, c_int64, PT, c_int64, c_void_p)


def _replay_outputs(A, G, final, W, dtype, leaves):
    """The captured function's body: build_graph on the placeholders; its outputs are out, the
    loss, and each leaf's gradient (a zeros constant for a leaf never backpropagated into), as
    new handles (ag_detach: the same values) that the library takes over."""
    out, _, loss, grads = build_graph(A, G, final, W, dtype, leaves)
    results = [out, loss]
    for d, g in zip(leaf_data(G), grads):
        if g is None:
            shape = np.shape(d)
            g = A.call("tensor_zeros", i64_array(shape), len(shape), AG_DTYPE[dtype])
        results.append(g)
    fresh = []
    for h in results:
        o = c_uint64(0)
        check(LIB.ag_detach(byref(o), h), "ag_detach")
        fresh.append(o.value)
    return fresh


def replay_inputs(G, dtype, rng):
    """Two new sets of leaf values: the generator's values moved by a relative 1e-3 (same
    domains, margins and branches, different bits), and the same values shuffled within each
    leaf and moved (other maxima, comparisons, masks)."""
    near, shuffled = [], []
    for d in leaf_data(G):
        d = np.asarray(d, dtype=np.float64)
        near.append((d * (1 + 1e-3 * rng.uniform(-1, 1, d.shape))).astype(NP_DTYPE[dtype]))
        flat = rng.permutation(d.ravel()).reshape(d.shape)
        shuffled.append((flat * (1 + 1e-3 * rng.uniform(-1, 1, d.shape))).astype(NP_DTYPE[dtype]))
    return [("near", near), ("shuffled", shuffled)]


def compare_bits(ours, eager):
    """None when identical bit for bit; else what differs. nan equal to nan with other bits is
    reported too (the replay must run the same arithmetic)."""
    ours, eager = np.asarray(ours), np.asarray(eager)
    if ours.shape != eager.shape or ours.dtype != eager.dtype:
        return f"{ours.dtype}{list(ours.shape)} vs eager {eager.dtype}{list(eager.shape)}"
    if ours.tobytes() == eager.tobytes():
        return None
    o, e = ours.astype(np.float64).ravel(), eager.astype(np.float64).ravel()
    differ = ~((o == e) | (np.isnan(o) & np.isnan(e)))
    if not differ.any():
        return "nan payloads or signs of zeros differ"
    i = int(np.argmax(differ))
    return (f"{int(differ.sum())} of {o.size} elements differ (first at {i}: replay {o[i]!r}, "
            f"eager {e[i]!r}; max |diff| {np.nanmax(np.abs(o - e)[differ]):.3e})")


def check_replay(G, final, W, dtype, rng):
    """Captures the graph (forward, loss, ag_backward, gradients) once from its own leaf values,
    replays it on replay_inputs and compares every output with run_ours on the same values.
    Returns a list of problems (empty when every replay is bit-identical)."""
    problems = []
    failure = []
    if any(op == "topk" for op, _, _ in G.prog):
        return problems  # a capture refuses topk values that need a gradient (documented): nothing to replay
    A = Arena()  # the handles made inside the capture
    E = Arena()  # the example inputs and the replay's inputs and outputs
    fn = None
    try:
        examples = []
        for d in leaf_data(G):
            h = E.from_numpy(d, dtype)
            check(LIB.ag_tensor_set_requires_grad(h, True), "ag_tensor_set_requires_grad")
            examples.append(h)
        nout = 2 + len(examples)

        def body(outputs, noutputs, inputs, ninputs, user_data):
            try:
                fresh = _replay_outputs(A, G, final, W, dtype, [inputs[i] for i in range(ninputs)])
                for k, h in enumerate(fresh):
                    outputs[k] = h
                return 0
            except Exception as e:  # noqa: BLE001 - reported as the capture's failure
                failure.append(e)
                return 1
            finally:
                A.free_all()

        cb = CAPTURE_FN(body)
        f = c_uint64(0)
        arr = (c_uint64 * len(examples))(*examples) if examples else None
        status = LIB.ag_capture(byref(f), cb, arr, len(examples), nout, None)
        if status != 0:
            why = f"{failure[0]}" if failure else LIB.ag_last_error().decode(errors="replace")
            return [f"capture failed: {LIB.ag_status_name(status).decode()}: {why}"]
        fn = f.value
        for what, data in replay_inputs(G, dtype, rng):
            ins = [E.from_numpy(d, dtype) for d in data]
            outs = (c_uint64 * nout)()
            check(LIB.ag_function_call(outs, nout, fn, (c_uint64 * len(ins))(*ins) if ins else None,
                                       len(ins)), "ag_function_call")
            for h in outs:
                E.keep(h)
            got = [to_numpy(h, dtype) for h in outs]
            out, loss, grads, _ = run_ours(G, final, W, dtype, data)
            names = ["out", "loss"] + [f"grad[x{k}]" for k in range(len(grads))]
            eager = [out, np.asarray(loss, dtype=NP_DTYPE[dtype])] + \
                [np.asarray(g, dtype=NP_DTYPE[dtype]) for g in grads]
            for name, a, b in zip(names, got, eager):
                if name == "loss":
                    a = a.reshape(())
                why = compare_bits(a, b)
                if why:
                    problems.append(f"{what} inputs: {name}: {why}")
    finally:
        if fn:
            check(LIB.ag_function_free(fn), "ag_function_free")
        E.free_all()
    n = live_handles()
    if n != 0:
        problems.append(f"{n} live handles after freeing the captured function and every handle")
    return problems


# XLA compiles each graph's reference about three times faster with these options. They change
# how machine code is generated, not what is computed (XLA never uses fast-math on CPU by
# default). Should a jaxlib not know one, the next set is tried, down to the defaults.
COMPILER_OPTIONS = [
    {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False,
     "xla_cpu_parallel_codegen_split_count": 1},
    {"xla_backend_optimization_level": 0},
    {},
]
OPTIONS_LOCK = threading.Lock()


@jax.custom_vjp
def _cotangent_noise(v, u, delta):
    """The identity, whose backward multiplies the cotangent by (1 + delta * u)."""
    return v


def _cotangent_noise_fwd(v, u, delta):
    return v, (u, delta)


def _cotangent_noise_bwd(res, g):
    u, delta = res
    return g * (1.0 + delta * u), jnp.zeros_like(u), jnp.zeros_like(delta)


_cotangent_noise.defvjp(_cotangent_noise_fwd, _cotangent_noise_bwd)


class Reference:
    """The graph in jax.numpy (float64), compiled once: forward output, loss and the leaves'
    gradients (jax.vjp with cotangent W, i.e. the gradients of sum(out * W)).

    The jitted function also takes two arrays per instruction, u[k] and v[k], and a scalar delta:
    every value the program computes with rounding is multiplied by (1 + delta * u[k]), and the
    gradient flowing back into it by (1 + delta * v[k]). With delta = 0 this is the plain
    reference; with a small delta it models rounding errors in every intermediate value, forward
    and backward, which `condition` uses to estimate how strongly the graph amplifies them."""

    def __init__(self, G, final, rng):
        self.leaf_data = [np.asarray(p["data"], dtype=np.float64) for op, _, p in G.prog if op == "leaf"]
        self.u = [[rng.uniform(-1.0, 1.0, G.shapes[k]) for k in range(len(G.prog))] for _ in range(2)]
        prog = G.prog

        def f(leaves, u, delta):
            vals, k = [], 0
            for j, (op, ins, p) in enumerate(prog):
                if op == "leaf":
                    v = leaves[k]
                    k += 1
                elif op == "const":
                    v = jnp.asarray(p["data"])
                else:
                    v = apply(op, [vals[i] for i in ins], p, JaxOps)
                if op not in EXACT_OPS:
                    v = _cotangent_noise(v * (1.0 + delta * u[0][j]), u[1][j], delta)
                vals.append(v)
            return vals[final]

        def ref(leaves, w, u, delta):
            out, vjp = jax.vjp(lambda *ls: f(ls, u, delta), *leaves)
            return out, jnp.sum(out * w), vjp(w)

        # One XLA compilation per graph (eager jax would compile every op for every new shape).
        lowered = jax.jit(ref).lower(self.leaf_data, jax.ShapeDtypeStruct(G.shapes[final], jnp.float64),
                                     self.u, 0.0)
        while True:
            opts = COMPILER_OPTIONS[0]
            try:
                self.fn = lowered.compile(compiler_options=opts)
                break
            except Exception:  # noqa: BLE001 (an option this jaxlib does not know)
                with OPTIONS_LOCK:
                    if len(COMPILER_OPTIONS) == 1:
                        raise
                    if COMPILER_OPTIONS[0] is opts:
                        COMPILER_OPTIONS.pop(0)

    def __call__(self, wv, delta=0.0):
        out, loss, grads = self.fn(self.leaf_data, jnp.asarray(wv, dtype=jnp.float64), self.u, delta)
        return np.asarray(out), float(loss), [np.asarray(g) for g in grads]

    def condition(self, wv, delta=1e-9):
        """(estimate, reference results): the largest normwise relative change of the output, the
        loss and the gradients when every intermediate value moves by a random relative delta,
        divided by delta. Graphs dominated by cancellation (say an analytically zero gradient
        made of rounding noise) have a huge estimate."""
        base = self(wv)
        pert = self(wv, delta)
        errs = [rel_err(pert[0], base[0]), rel_err(pert[1], base[1])]
        errs += [rel_err(a, b) for a, b in zip(pert[2], base[2])]
        return max(errs) / delta, base


# ---------------------------------------------------------------------------------------------
# A few ops' forward values on their own
# ---------------------------------------------------------------------------------------------

def gelu_tail_checks():
    failures = []
    for dtype, lo, tol in (("float64", -12.0, 1e-10), ("float32", -9.0, 1e-4)):
        xt = np.linspace(lo, -3.0, 19).astype(NP_DTYPE[dtype]).astype(np.float64)
        ref = np.asarray(jax.nn.gelu(jnp.asarray(xt), approximate=False))
        gref = np.asarray(jax.grad(lambda v: jnp.sum(jax.nn.gelu(v, approximate=False)))(jnp.asarray(xt)))
        A = Arena()
        try:
            leaf = A.from_numpy(xt, dtype)
            check(LIB.ag_tensor_set_requires_grad(leaf, True), "ag_tensor_set_requires_grad")
            y = A.call("gelu", leaf)
            check(LIB.ag_backward(A.call("sum", y, None, 0, False), 0, False, False), "ag_backward")
            g = c_uint64(0)
            check(LIB.ag_tensor_grad(byref(g), leaf), "ag_tensor_grad")
            A.keep(g.value)
            results = (("forward", to_numpy(y, dtype), ref), ("gradient", to_numpy(g.value, dtype), gref))
        finally:
            A.free_all()
        for what, ours, r in results:
            bad = [(a, o, e) for a, o, e in zip(xt, ours.astype(np.float64), r) if not abs(o - e) <= tol * abs(e)]
            if bad:
                failures.append(
                    f"gelu {what} ({dtype}) on x in [{lo:g}, -3] vs jax: relative error above {tol:g} at "
                    f"{len(bad)} of {len(xt)} points; (x, ours, jax): "
                    + ", ".join(f"({a:g}, {o:.6e}, {e:.6e})" for a, o, e in bad[:3]))
    return failures


def spot_checks():
    """Forward values (and a few gradients) of single ops against numpy / jax, float64."""
    failures = []
    x = np.concatenate([np.linspace(-6, 6, 49), [-1000.0, -50.0, -1e-8, 0.0, 1e-8, 50.0, 1000.0]])
    erf = np.asarray(jsp.erf(jnp.asarray(x / math.sqrt(2.0))))
    cases = {
        "gelu": 0.5 * x * (1.0 + erf),
        "sigmoid": np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x)))),
        "softplus": np.logaddexp(0.0, x),
        "tanh": np.tanh(x),
        "sin": np.sin(x),
        "cos": np.cos(x),
        "abs": np.abs(x),
        "relu": np.maximum(x, 0.0),
    }
    jref = {"gelu": jax.nn.gelu(jnp.asarray(x), approximate=False),
            "sigmoid": jax.nn.sigmoid(jnp.asarray(x)), "softplus": jax.nn.softplus(jnp.asarray(x))}
    A = Arena()
    try:
        t = A.from_numpy(x, "float64")
        for op, ref in cases.items():
            ours = to_numpy(A.call(op, t), "float64")
            for name, r in [("numpy", ref)] + ([("jax", np.asarray(jref[op]))] if op in jref else []):
                e = rel_err(ours, r)
                if not e < 1e-13:
                    failures.append(f"{op} forward vs {name}: error {e:.3e}")
        # gelu's negative tail on its own: x * Phi(x) is tiny there but representable, so each
        # point is compared with its own size (forward and gradient, both dtypes)
        failures += gelu_tail_checks()
        # sigmoid and softplus gradients stay finite at +-1000 (as jax's)
        for op, jf in (("sigmoid", jax.nn.sigmoid), ("softplus", jax.nn.softplus)):
            B = Arena()
            try:
                xs = np.array([-1000.0, -30.0, 0.5, 30.0, 1000.0])
                leaf = B.from_numpy(xs, "float64")
                check(LIB.ag_tensor_set_requires_grad(leaf, True), "set_requires_grad")
                loss = B.call("sum", B.call(op, leaf), None, 0, False)
                check(LIB.ag_backward(loss, 0, False, False), "ag_backward")
                g = c_uint64(0)
                check(LIB.ag_tensor_grad(byref(g), leaf), "ag_tensor_grad")
                B.keep(g.value)
                ours = to_numpy(g.value, "float64")
                ref = np.asarray(jax.grad(lambda v: jnp.sum(jf(v)))(jnp.asarray(xs)))
                e = rel_err(ours, ref)
                if not (np.all(np.isfinite(ours)) and e < 1e-13):
                    failures.append(f"{op} gradient at +-1000 vs jax: {ours} vs {ref}")
            finally:
                B.free_all()
        # log1p, expm1, erf where their naive forms lose everything; clamp, atan2 (signed zeros,
        # quadrants), cumsum against numpy / jax
        small = np.array([-0.999, -0.5, -1e-10, 0.0, 1e-12, 1e-5, 0.3, 3.0, 40.0])
        ts = A.from_numpy(small, "float64")
        x2 = np.array([[0.0, -0.0, 0.0, 1.5], [-2.0, 3.0, -0.0, 0.25]])
        y2 = np.array([[0.0, 0.0, -0.0, -1.0], [-1.0, 0.5, -4.0, 2.0]])
        t2, u2 = A.from_numpy(x2, "float64"), A.from_numpy(y2, "float64")
        added = [
            ("log1p", A.call("log1p", ts), np.log1p(small)),
            ("expm1", A.call("expm1", ts), np.expm1(small)),
            ("erf", A.call("erf", t), np.asarray(jsp.erf(jnp.asarray(x)))),
            ("clamp", A.call("clamp", t, c_double(-2.5), c_double(math.inf)), np.clip(x, -2.5, None)),
            ("atan2", A.call("atan2", t2, u2), np.arctan2(x2, y2)),
            ("cumsum", A.call("cumsum", t2, -1), np.cumsum(x2, axis=-1)),
        ]
        for name, h, ref in added:  # elementwise relative error: the small values count too
            ours = to_numpy(h, "float64")
            ref = np.asarray(ref, dtype=np.float64)
            ok = ours.shape == ref.shape and bool(np.all(np.abs(ours - ref) <= 1e-15 * np.abs(ref)))
            if not (ok and np.array_equal(np.signbit(ours), np.signbit(ref))):
                failures.append(f"{name} forward vs numpy/jax: {ours.ravel()[:6]} vs {ref.ravel()[:6]}")
        # reductions on a fixed tensor against numpy
        rng = np.random.default_rng(7)
        m = rng.normal(0, 3, (3, 4, 5)) + np.array([0.0, 900.0, -900.0])[:, None, None]
        tm = A.from_numpy(m, "float64")
        ax = i64_array([0, 2])
        red = [
            ("logsumexp", A.call("logsumexp", tm, ax, 2, False), np.asarray(jsp.logsumexp(m, axis=(0, 2)))),
            ("var c=0", A.call("var", tm, ax, 2, 0, False), np.var(m, axis=(0, 2))),
            ("var c=1", A.call("var", tm, ax, 2, 1, True), np.var(m, axis=(0, 2), ddof=1, keepdims=True)),
            ("max", A.call("max", tm, ax, 2, False), np.max(m, axis=(0, 2))),
            ("mean", A.call("mean", tm, None, 0, False), np.mean(m)),
            ("softmax", A.call("softmax", tm, 0), np.asarray(jax.nn.softmax(m, axis=0))),
            ("log_softmax", A.call("log_softmax", tm, -1), np.asarray(jax.nn.log_softmax(m, axis=-1))),
        ]
        for name, h, ref in red:
            e = rel_err(to_numpy(h, "float64"), ref)
            if not e < 1e-12:
                failures.append(f"{name} forward vs numpy: error {e:.3e}")
    finally:
        A.free_all()
    failures += empty_batch_checks()
    if live_handles() != 0:
        failures.append(f"{live_handles()} live handles after the spot checks")
    return failures


def empty_batch_checks():
    """Issue 18's ops on N = 0 batches (and S = 0 keys): the result has the reference's (jax)
    empty shape, or for attention without keys its zeros, and backward of sum(result) gives
    the inputs empty gradients and the parameters zero ones (numpy's forward shapes; gradients
    by hand: with N = 0 no element reaches a parameter)."""
    failures = []
    rng = np.random.default_rng(18)
    conv = {"stride": [1, 2], "pad": [1, 0], "dil": [1, 1], "groups": 2}
    cases = [
        ("conv2d", [(0, 4, 5, 5), (6, 2, 3, 2), (6,)], conv),
        ("conv1d", [(0, 2, 7), (4, 1, 3)], dict(conv, stride=[1, 2], groups=2)),
        ("max_pool2d", [(0, 3, 4, 4)], {"kernel": [2, 2], "stride": [0, 0], "pad": [1, 0]}),
        ("avg_pool2d", [(0, 3, 4, 4)], {"kernel": [3, 2], "stride": [1, 2], "pad": [1, 1], "cip": False}),
        ("adaptive_avg_pool2d", [(0, 3, 5, 4)], {"out": [2, 3]}),
        ("layer_norm", [(0, 3, 4), (3, 4), (3, 4)], {"nd": 2, "eps": 1e-5, "w": True, "b": True}),
        ("group_norm", [(0, 4, 3), (4,), (4,)], {"groups": 2, "eps": 1e-5, "w": True, "b": True}),
        ("batch_norm", [(0, 3, 2), (3,)], {"training": True, "eps": 1e-5, "w": True, "b": False}),
        ("batch_norm", [(0, 3)], {"training": False, "eps": 1e-5, "w": False, "b": False,
                                  "rm": np.zeros(3), "rv": np.ones(3)}),
        ("attention", [(0, 2, 3, 4), (0, 2, 5, 4), (0, 2, 5, 3)], {"causal": True, "scale": 0.0, "mask": None}),
        ("attention", [(2, 3, 4), (2, 0, 4), (2, 0, 3)], {"causal": False, "scale": 0.5, "mask": None}),
        ("embedding", [(4, 3)], {"indices": np.zeros((0, 2), dtype=np.int64)}),
    ]
    for op, shapes, p in cases:
        A = Arena()
        try:
            vals = [rng.normal(size=sh) for sh in shapes]
            leaves = []
            for v in vals:
                h = A.from_numpy(v, "float64")
                check(LIB.ag_tensor_set_requires_grad(h, True), "ag_tensor_set_requires_grad")
                leaves.append(h)
            out = ag_apply_new(A, op, leaves, p, "float64")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy's mean of an empty slice
                ref = np.nan_to_num(np.asarray(apply_new(op, vals, p, np)))  # attention without keys: zeros
            # d sum(result) / d input: every input's gradient is empty or zero (N = 0: the parameters
            # meet no element; S = 0: the result is constant zeros)
            rgrads = [np.zeros(np.shape(v)) for v in vals]
            ours = to_numpy(out, "float64")
            if ours.shape != ref.shape or (ref.size and rel_err(ours, ref) > 1e-12):
                failures.append(f"{op} {shapes}: result {ours.shape} {ours.ravel()[:4]}, jax {ref.shape}")
                continue
            loss = A.call("sum", out, None, 0, False)
            check(LIB.ag_backward(loss, 0, False, False), "ag_backward")
            for k, (leaf, rg) in enumerate(zip(leaves, rgrads)):
                g = c_uint64(0)
                check(LIB.ag_tensor_grad(byref(g), leaf), "ag_tensor_grad")
                got = np.zeros(np.shape(vals[k])) if not g.value else to_numpy(A.keep(g.value), "float64")
                if got.shape != rg.shape or (rg.size and rel_err(got, rg) > 1e-12):
                    failures.append(f"{op} {shapes}: gradient {k} {got.shape} {got.ravel()[:4]}, jax {rg.shape}")
        except AgError as e:
            failures.append(f"{op} {shapes}: {e}")
        finally:
            A.free_all()
    return failures


# ---------------------------------------------------------------------------------------------

# Values a graph computes without rounding: their inputs' values, rearranged or selected.
# Reference.condition perturbs only the others (and so keeps exact ties, e.g. of copies, intact).
EXACT_OPS = {"leaf", "const", "reshape", "transpose", "permute", "expand", "squeeze", "unsqueeze",
             "concat", "stack", "slice", "index_select", "gather", "neg", "abs", "relu", "maximum",
             "minimum", "maximum_scalar", "minimum_scalar", "max", "min", "where", "clamp",
             "max_pool2d", "embedding", "masked_fill", "topk", "to_dtype"} | set(COMPARE)
# A graph whose reference output, loss or a gradient is (as a whole) smaller than this in magnitude,
# but not zero, is outside the dtype's range (float32 cannot hold 1e-60) and is redrawn.
TINY = {"float64": 1e-280, "float32": 1e-30}
LIB_LOCK = threading.Lock()  # the library's live-handle count is global: one graph at a time


class Prepared:
    pass


def prepare(seed, dtype, gi):
    """Graph gi of dtype: a generated program with its compiled reference and reference results.
    Its random numbers come from (seed, dtype, gi, attempt) alone, so every graph can be rebuilt on
    its own (--graph). Ill-conditioned graphs and graphs outside the dtype's range are redrawn."""
    P = Prepared()
    P.redrawn = []
    P.seconds = {"generate": 0.0, "jax": 0.0}
    for attempt in range(100):
        t = time.perf_counter()
        rng = np.random.default_rng([seed, AG_DTYPE[dtype], gi, attempt])
        G, final, W = generate(rng, dtype)
        with LIB_LOCK:
            wv = make_w(W, dtype)
        t1 = time.perf_counter()
        kappa, (rout, rloss, rgrads) = Reference(G, final, rng).condition(wv)
        t2 = time.perf_counter()
        P.seconds["generate"] += t1 - t
        P.seconds["jax"] += t2 - t1
        sizes = [np.max(np.abs(x)) if np.size(x) else 0.0 for x in [rout, rloss] + rgrads]
        if kappa > MAX_CONDITION[dtype]:
            reason = f"condition estimate {kappa:.1e}"
        elif any(0 < m < TINY[dtype] for m in sizes):
            reason = f"a result smaller than {TINY[dtype]:.0e} (outside {dtype}'s range)"
        else:
            P.G, P.final, P.W, P.wv, P.kappa = G, final, W, wv, kappa
            P.ref = (rout, rloss, rgrads)
            return P
        P.redrawn.append(f"{reason} | {describe(G, final)}")
    raise RuntimeError(f"no usable {dtype} graph {gi} in 100 attempts")


def replay_sweep(args):
    """--replay-only: every graph generated (first attempt of each index, no redraws) is
    captured and replayed; prints the failing ones and, per op, how many graphs with it failed."""
    t0 = time.time()
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    indices = [args.graph] if args.graph is not None else range(args.graphs)
    failed, total, bad_ops, op_count = 0, 0, {}, {}
    for dtype in dtypes:
        for gi in indices:
            rng = np.random.default_rng([args.seed, AG_DTYPE[dtype], gi, 0])
            G, final, W = generate(rng, dtype)
            ops = sorted({op for op, _, _ in G.prog if op not in ("leaf", "const")})
            for op in ops:
                op_count[(dtype, op)] = op_count.get((dtype, op), 0) + 1
            try:
                problems = check_replay(G, final, W, dtype, np.random.default_rng([args.seed, AG_DTYPE[dtype], gi, 7]))
            except AgError as e:
                problems = [f"API error: {e}"]
            total += 1
            if problems:
                failed += 1
                for op in ops:
                    bad_ops[(dtype, op)] = bad_ops.get((dtype, op), 0) + 1
                print(f"FAIL {dtype} graph {gi}: {'; '.join(problems[:3])} | ops: {describe(G, final)}")
            elif args.verbose:
                print(f"ok   {dtype} graph {gi} | {describe(G, final)}")
    for (d, op), n in sorted(bad_ops.items()):
        print(f"  {d} {op}: {n} / {op_count[(d, op)]} graphs with it failed")
    print(f"time: {time.time() - t0:.1f} s")
    print(f"replay: {total - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main():
    global LIB
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", type=int, default=200, help="graphs per dtype (default 200)")
    ap.add_argument("--seed", type=int, default=20240611, help="master seed")
    ap.add_argument("--dtype", choices=["float64", "float32", "both"], default="both")
    ap.add_argument("--graph", type=int, default=None, help="run only this graph (with its dump)")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                    help="threads that build the jax references (default: min(4, cpus))")
    ap.add_argument("--verbose", action="store_true", help="print every graph, dump failing ones")
    ap.add_argument("--no-replay", action="store_true",
                    help="skip the capture-and-replay check (bit-identical to eager on new inputs)")
    ap.add_argument("--replay-only", action="store_true",
                    help="only the capture-and-replay check, on graphs as generated (no JAX "
                         "reference, no condition estimate): a fast sweep over many graphs")
    args = ap.parse_args()
    if args.graph is not None:
        args.verbose = True

    LIB = load_library(LIB_PATH)
    if args.replay_only:
        return replay_sweep(args)
    t0 = time.time()
    print(f"library: {LIB_PATH} (version {LIB.ag_version().decode()})")
    print(f"reference: jax {jax.__version__} on CPU, float64; numpy {np.__version__}; seed {args.seed}")
    print("metric: normwise relative error max|ours - ref| / max(max|ref|, 1e-300) per tensor "
          "(output, loss, every leaf gradient); thresholds: float64 1e-10, float32 1e-4")

    t = time.perf_counter()
    spot = spot_checks()
    timing = {"spot checks": time.perf_counter() - t, "generate": 0.0, "jax": 0.0, "autograd": 0.0,
              "replay": 0.0}
    for f in spot:
        print(f"FAIL spot check: {f}")
    print(f"spot checks: {'OK' if not spot else f'{len(spot)} failed'}")

    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    indices = [args.graph] if args.graph is not None else range(args.graphs)
    jobs = [(d, gi) for d in dtypes for gi in indices]
    passed = failed = 0
    worst = {d: (0.0, None) for d in dtypes}
    worst_op = {}
    op_count = {}
    redrawn = {d: 0 for d in dtypes}
    replayed = {d: 0 for d in dtypes}
    replay_failed = {}  # (dtype, op): graphs containing op whose replay was not bit-identical
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(prepare, args.seed, d, gi) for d, gi in jobs]
        for (dtype, gi), fut in zip(jobs, futures):
            P = fut.result()
            for k, v in P.seconds.items():
                timing[k] += v
            redrawn[dtype] += len(P.redrawn)
            if args.verbose:
                for r in P.redrawn:
                    print(f"redraw {dtype} graph {gi}: {r}")
            G, final, W, kappa = P.G, P.final, P.W, P.kappa
            rout, rloss, rgrads = P.ref
            thr = THRESHOLD[dtype]
            ops = sorted({op for op, _, _ in G.prog if op not in ("leaf", "const")})
            desc = describe(G, final)
            out = grads = None
            try:
                t = time.perf_counter()
                with LIB_LOCK:
                    out, loss, grads, wv2 = run_ours(G, final, W, dtype)
                timing["autograd"] += time.perf_counter() - t
                if not np.array_equal(P.wv, wv2):
                    raise AgError("ag_tensor_rand_normal gave different values for the same seed")
                errs = {"out": rel_err(out, rout), "loss": rel_err(loss, rloss)}
                for k, (g, rg) in enumerate(zip(grads, rgrads)):
                    errs[f"grad[x{k}]"] = rel_err(g, rg)
                name, err = max(errs.items(), key=lambda kv: kv[1])
                problem = None if err < thr else \
                    f"error {err:.3e} in {name} ({', '.join(f'{k} {v:.1e}' for k, v in errs.items())})"
            except AgError as e:
                err, problem = math.inf, f"API error: {e}"
            if not args.no_replay:
                t = time.perf_counter()
                try:
                    with LIB_LOCK:
                        rproblems = check_replay(G, final, W, dtype,
                                                 np.random.default_rng([args.seed, AG_DTYPE[dtype], gi, 7]))
                except AgError as e:
                    rproblems = [f"API error: {e}"]
                timing["replay"] += time.perf_counter() - t
                replayed[dtype] += 1
                if rproblems:
                    for op in ops:
                        replay_failed[(dtype, op)] = replay_failed.get((dtype, op), 0) + 1
                    rp = "replay not bit-identical to eager: " + "; ".join(rproblems[:3]) + \
                        (f" (+{len(rproblems) - 3} more)" if len(rproblems) > 3 else "")
                    problem = rp if problem is None else f"{problem}; {rp}"
            for op in ops:
                op_count[(dtype, op)] = op_count.get((dtype, op), 0) + 1
                worst_op[(dtype, op)] = max(worst_op.get((dtype, op), 0.0), err)
            if err > worst[dtype][0] or worst[dtype][1] is None:
                worst[dtype] = (err, gi)
            if problem is None:
                passed += 1
                if args.verbose:
                    print(f"ok   {dtype} graph {gi}: {err:.2e} (condition {kappa:.1e}) | {desc}")
                    if args.graph is not None:
                        dump(G, final, out, grads, rout, rgrads)
            else:
                failed += 1
                print(f"FAIL {dtype} graph {gi}: {problem} (condition {kappa:.1e}) | ops: {desc}")
                if args.verbose:
                    dump(G, final, out, grads, rout, rgrads)

    print()
    print("worst normwise relative error per dtype:")
    for d in dtypes:
        print(f"  {d}: {worst[d][0]:.3e} (graph {worst[d][1]}; threshold {THRESHOLD[d]:.0e}); "
              f"{redrawn[d]} candidate graphs redrawn (condition estimate > {MAX_CONDITION[d]:.0e}, "
              f"or a result below {TINY[d]:.0e})")
    print("worst error per op (over the graphs containing it; graphs containing it):")
    print(f"  {'op':16s}" + "".join(f"{d:>22s}" for d in dtypes))
    for op in OP_NAMES + [o for o in COMPARE]:
        if not any((d, op) in op_count for d in dtypes):
            continue
        row = "".join(f"{worst_op.get((d, op), 0.0):14.2e} ({op_count.get((d, op), 0):4d})" for d in dtypes)
        print(f"  {op:16s}{row}")
    if not args.no_replay:
        print("capture and replay: every graph captured once (forward, loss, ag_backward, gradients), "
              "replayed on two new sets of leaf values, compared bit for bit with the eager run on them: "
              + ", ".join(f"{d} {replayed[d]} graphs" for d in dtypes))
        if replay_failed:
            print("  ops in graphs whose replay differed (dtype, op: graphs with a difference / graphs "
                  "containing the op):")
            for (d, op), n in sorted(replay_failed.items()):
                print(f"    {d} {op}: {n} / {op_count.get((d, op), 0)}")
        else:
            print("  every replay bit-identical")
    # Coverage: with the default 200 graphs per dtype every op must have appeared in each dtype.
    missing = [op for op in OP_NAMES + COMPARE if not all((d, op) in op_count for d in dtypes)]
    coverage_required = args.graph is None and args.graphs >= 200
    if missing and args.graph is None:
        print(f"ops never generated: {', '.join(missing)}" + ("" if coverage_required else " (not required with --graphs < 200)"))
    print(f"time: {time.time() - t0:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()) + ")")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and not spot and not (missing and coverage_required) else 1


if __name__ == "__main__":
    sys.exit(main())
