"""Function transforms, as in JAX and torch.func: jvp, vjp, jacobian, hvp and hessian of a
Python function of Tensors (ag_jvp, ag_vjp, ag_jacobian, ag_hvp, ag_hessian).

The function is called back by the library, once or many times, with Tensors of its own (in
forward mode they carry tangents through every operation); it must return one Tensor. An
exception it raises makes the transform raise CallbackError with that exception as its
__cause__, as gradcheck and gradient hooks do. Forward-mode transforms (jvp, hvp, hessian,
jacobian in either mode) cannot run inside the function of another forward-mode transform
(StateError); vjp can, and its gradients then carry their tangents (a jvp of a vjp is a
Hessian-vector product).
"""

from ctypes import byref, c_uint64

from ._library import lib
from .errors import check
from .graph import _build, build_function
from .tensor import Tensor, coerce, handle_of

JACOBIAN_REVERSE = 1  # AG_JACOBIAN_REVERSE
JACOBIAN_FORWARD = 2  # AG_JACOBIAN_FORWARD
_MODES = {"rev": JACOBIAN_REVERSE, "reverse": JACOBIAN_REVERSE,
          "fwd": JACOBIAN_FORWARD, "forward": JACOBIAN_FORWARD}


def _primal_list(primals):
    """(list of Tensors, whether a lone Tensor was given)."""
    if isinstance(primals, Tensor):
        return [primals], True
    if not hasattr(primals, "__iter__"):
        raise TypeError("primals must be a Tensor or a sequence of Tensors")
    items = list(primals)
    if not items:
        raise ValueError("primals is empty")
    for i, p in enumerate(items):
        handle_of(p, f"primals[{i}]")
    return items, False


def _like(value, like, what):
    """value as a Tensor of like's dtype (Tensors pass as they are; the library checks them)."""
    t = coerce(value, like, what)
    if t is None:
        raise TypeError(f"{what} must be a Tensor or an array-like, not {type(value).__name__}")
    return t


def _handles(tensors):
    return (c_uint64 * len(tensors))(*[t._handle for t in tensors])


def jvp(f, primals, tangents):
    """(f(*primals), its directional derivative along tangents), by one forward-mode pass.

    primals: a Tensor (then tangents is one Tensor or array-like) or a sequence of Tensors
    (then tangents is a sequence with one per primal), each tangent of its primal's shape and
    dtype. Returns (output, tangent): the tangent is
    sum_k J_k @ tangents[k], of the output's shape and dtype (zeros when f does not use the
    primals). Like jax.jvp and torch.func.jvp. Where a primal requires grad (grad mode on), the
    tangent carries history, so backward can differentiate it again.
    """
    ps, lone = _primal_list(primals)
    ts = [tangents] if lone else list(tangents)
    if len(ts) != len(ps):
        raise ValueError(f"{len(ts)} tangents for {len(ps)} primals")
    ts = [_like(t, p, f"tangents[{i}]") for i, (t, p) in enumerate(zip(ts, ps))]
    out, tan = c_uint64(0), c_uint64(0)
    with build_function(f) as key:
        check(lib.ag_jvp(byref(out), byref(tan), _build, key, _handles(ps), len(ps), _handles(ts)))
    return Tensor._wrap(out.value), Tensor._wrap(tan.value)


def vjp(f, primals, cotangent):
    """(f(*primals), the gradients of sum(f(*primals) * cotangent)), by one backward pass.

    primals: a Tensor or a sequence of Tensors; cotangent: of f's output shape and dtype (a
    Tensor, number or array-like). Returns (output, grads): grads is a Tensor for a lone Tensor
    primal, else a tuple with one Tensor per primal (zeros for a primal f does not use). Like
    the result of jax.vjp's function applied to the cotangent. The primals are differentiated as
    values: no .grad is touched, and the results carry no history.
    """
    ps, lone = _primal_list(primals)
    cot = _like(cotangent, ps[0], "cotangent")
    out, grads = c_uint64(0), (c_uint64 * len(ps))()
    with build_function(f) as key:
        check(lib.ag_vjp(byref(out), grads, _build, key, _handles(ps), len(ps), cot._handle))
    gs = tuple(Tensor._wrap(h) for h in grads)
    return Tensor._wrap(out.value), gs[0] if lone else gs


def jacobian(f, x, mode="rev"):
    """The Jacobian of f at x: a Tensor of shape f(x).shape + x.shape whose element
    [i..., j...] is d f(x)[i...] / d x[j...].

    mode: "rev" (one backward pass per output element, as jax.jacrev) or "fwd" (one
    forward-mode pass per input element, as jax.jacfwd; f must keep its output shape).
    """
    if mode not in _MODES:
        raise ValueError(f'mode must be "rev" or "fwd", not {mode!r}')
    out = c_uint64(0)
    with build_function(f) as key:
        check(lib.ag_jacobian(byref(out), _build, key, handle_of(x, "x"), _MODES[mode]))
    return Tensor._wrap(out.value)


def hvp(f, x, v):
    """The Hessian-vector product H(x) @ v of a scalar function f (one output element), by
    forward over reverse (no Hessian is formed); a Tensor of x's shape. v: of x's shape and
    dtype (a Tensor or an array-like)."""
    handle_of(x, "x")
    vv = _like(v, x, "v")
    out = c_uint64(0)
    with build_function(f) as key:
        check(lib.ag_hvp(byref(out), _build, key, handle_of(x, "x"), vv._handle))
    return Tensor._wrap(out.value)


def hessian(f, x):
    """The Hessian of a scalar function f at x: a Tensor of shape x.shape + x.shape, one
    forward-over-reverse product per element of x (as jax.hessian)."""
    out = c_uint64(0)
    with build_function(f) as key:
        check(lib.ag_hessian(byref(out), _build, key, handle_of(x, "x")))
    return Tensor._wrap(out.value)
