"""libautograd.Function: user-defined ops from Python (torch.autograd.Function's API) over the
C custom ops.

Expected values: central finite differences in float64 of the NumPy formulas (first
derivatives, and second derivatives by nested differences), hand derivation, the same function
written with catalogue ops, and PyTorch's autograd.Function where torch is installed (those
tests skip otherwise). A compiled function's replay is compared with the eager run bit for bit.
"""

import gc
import os
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import libautograd as ag
from libautograd import function as F
from libautograd.errors import ERR_CALLBACK

DTYPES = [ag.float64, ag.float32]
TOL = {ag.float64: dict(rtol=1e-6, atol=1e-8), ag.float32: dict(rtol=2e-4, atol=2e-5)}
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def T(array, dtype):
    """A Tensor of dtype from a NumPy array (the result of a NumPy computation in a callback)."""
    return ag.tensor(np.asarray(array), dtype=dtype)


# ---- ops with NumPy forwards and hand-written NumPy backwards --------------------------------
# Each: the Function, the NumPy formula (for references), input shapes (broadcasting), outputs.


class SinTimes(ag.Function):
    """y = x sin x (1 input, 1 output)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        v = x.numpy()
        return T(v * np.sin(v), x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        v = x.numpy()
        return T(g.numpy() * (np.sin(v) + v * np.cos(v)), g.dtype)


class AExpB(ag.Function):
    """y = a exp(b), a (3, 4), b (4,): b's gradient is returned in the broadcast shape."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return T(a.numpy() * np.exp(b.numpy()), a.dtype)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        e = np.exp(b.numpy())
        return T(g.numpy() * e, g.dtype), T(g.numpy() * a.numpy() * e, g.dtype)


class Mix(ag.Function):
    """(u, v) = (a b + c, a - b c), a (2, 3), b (3,), c (2, 1): 3 inputs, 2 outputs, gradients
    in the broadcast shape (2, 3)."""

    @staticmethod
    def forward(ctx, a, b, c):
        ctx.save_for_backward(a, b, c)
        A, B, C = a.numpy(), b.numpy(), c.numpy()
        return T(A * B + C, a.dtype), T(A - B * C, a.dtype)

    @staticmethod
    def backward(ctx, gu, gv):
        a, b, c = ctx.saved_tensors
        A, B, C = a.numpy(), b.numpy(), c.numpy()
        U, V = gu.numpy(), gv.numpy()
        return (T(U * B + V, gu.dtype), T(U * A - V * C, gu.dtype),
                T(U - V * B + 0 * A, gu.dtype))


class SinCos(ag.Function):
    """(sin x, cos x): 1 input, 2 outputs."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        v = x.numpy()
        return T(np.sin(v), x.dtype), T(np.cos(v), x.dtype)

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        v = x.numpy()
        return T(g1.numpy() * np.cos(v) - g2.numpy() * np.sin(v), g1.dtype)


CASES = {
    "1in-1out": (SinTimes, lambda x: [x * np.sin(x)], [(2, 3)]),
    "2in-1out-broadcast": (AExpB, lambda a, b: [a * np.exp(b)], [(3, 4), (4,)]),
    "3in-2out-broadcast": (Mix, lambda a, b, c: [a * b + c, a - b * c], [(2, 3), (3,), (2, 1)]),
    "1in-2out": (SinCos, lambda x: [np.sin(x), np.cos(x)], [(5,)]),
}


def fd_gradients(formula, arrays, weights, eps=1e-6):
    """Central differences (float64) of L = sum_k sum(weights[k] * formula(*arrays)[k])."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]

    def loss(xs):
        return sum(float(np.sum(w * o)) for w, o in zip(weights, formula(*xs)))

    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            g[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        grads.append(g)
    return grads


def _inputs(shapes, rng):
    return [rng.uniform(-1.5, 1.5, s) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences(case, dtype, rng):
    op, formula, shapes = CASES[case]
    arrays = _inputs(shapes, rng)
    want_out = formula(*arrays)
    weights = [rng.normal(size=o.shape) for o in want_out]
    want = fd_gradients(formula, arrays, weights)

    xs = [ag.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out = op.apply(*xs)
    outs = list(out) if isinstance(out, tuple) else [out]
    assert len(outs) == len(want_out)
    for o, w in zip(outs, want_out):
        assert o.dtype is dtype and o.shape == w.shape and o.requires_grad
        np.testing.assert_allclose(o.numpy(), w, **TOL[dtype])
    grads = ag.grad(outs, xs, grad_outputs=[T(w, dtype) for w in weights])
    for g, x, w in zip(grads, xs, want):
        assert g.shape == x.shape and g.dtype is dtype  # broadcast gradients were reduced
        np.testing.assert_allclose(g.numpy(), w, **TOL[dtype])


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradcheck_float64(case, rng):
    op, formula, shapes = CASES[case]
    xs = [ag.tensor(a, requires_grad=True) for a in _inputs(shapes, rng)]

    def f(*args):
        out = op.apply(*args)
        outs = list(out) if isinstance(out, tuple) else [out]
        return sum(((k + 1.0) * o.sin()).sum() for k, o in enumerate(outs))

    assert ag.gradcheck(f, xs)


def test_backward_accumulates_into_leaves(rng):
    """Through .backward(): the leaves' .grad, twice accumulated (as PyTorch)."""
    a = rng.uniform(-1, 1, (3, 4))
    b = rng.uniform(-1, 1, (4,))
    x, y = ag.tensor(a, requires_grad=True), ag.tensor(b, requires_grad=True)
    AExpB.apply(x, y).sum().backward()
    AExpB.apply(x, y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.broadcast_to(np.exp(b), (3, 4)), rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), 2 * (a * np.exp(b)).sum(axis=0), rtol=1e-12)


# ---- against PyTorch's autograd.Function ------------------------------------------------------


def _torch_ops(torch):
    class TMix(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c):
            ctx.save_for_backward(a, b, c)
            return a * b + c, a - b * c

        @staticmethod
        def backward(ctx, gu, gv):
            a, b, c = ctx.saved_tensors
            # torch wants gradients in the inputs' shapes: reduce by hand
            return (gu * b + gv, (gu * a - gv * c).sum(0), (gu - gv * b).sum(1, keepdim=True))

    class TCube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            return k * x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * ctx.k * x * x, None

    return TMix, TCube


class Cube(ag.Function):
    """y = k x^3, k a Python number; backward with library ops (differentiable), jvp too."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return T(k * x.numpy() ** 3, x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * ctx.k * x * x, None

    @staticmethod
    def jvp(ctx, tx, tk):
        assert tk is None  # k is not a Tensor
        (x,) = ctx.saved_tensors
        return tx * 3 * ctx.k * x * x


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_against_torch_autograd_function(dtype, rng):
    torch = pytest.importorskip("torch")
    TMix, TCube = _torch_ops(torch)
    tdt = torch.float64 if dtype is ag.float64 else torch.float32
    arrays = _inputs([(2, 3), (3,), (2, 1)], rng)
    wu, wv = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))

    ts = [torch.tensor(a, dtype=tdt, requires_grad=True) for a in arrays]
    tu, tv = TMix.apply(*ts)
    ((tu * torch.tensor(wu, dtype=tdt)).sum() + (tv * torch.tensor(wv, dtype=tdt)).sum()).backward()

    xs = [ag.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    u, v = Mix.apply(*xs)
    ((u * T(wu, dtype)).sum() + (v * T(wv, dtype)).sum()).backward()
    for mine, theirs in ((u, tu), (v, tv)):
        np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), **TOL[dtype])
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), **TOL[dtype])

    # second derivatives through a backward written with each library's ops
    a = rng.uniform(0.5, 1.5, (4,))
    vec = rng.normal(size=4)
    tx = torch.tensor(a, dtype=tdt, requires_grad=True)
    (tg,) = torch.autograd.grad(TCube.apply(tx, 1.5).sum(), tx, create_graph=True)
    (th,) = torch.autograd.grad((tg * torch.tensor(vec, dtype=tdt)).sum(), tx)
    x = ag.tensor(a, dtype=dtype, requires_grad=True)
    (g,) = ag.grad(Cube.apply(x, 1.5).sum(), x, create_graph=True)
    (h,) = ag.grad((g * T(vec, dtype)).sum(), x)
    np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(h.numpy(), th.numpy(), **TOL[dtype])


# ---- second derivatives -----------------------------------------------------------------------


class SquareSin(ag.Function):
    """y = a^2 sin(b), backward written with library ops on the saved inputs."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return T(a.numpy() ** 2 * np.sin(b.numpy()), a.dtype)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * 2 * a * b.sin(), g * a * a * b.cos()


class Exp(ag.Function):
    """y = exp(x), saving its output: in backward it carries its history."""

    @staticmethod
    def forward(ctx, x):
        y = T(np.exp(x.numpy()), x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


def fd_hessian(loss, x, eps=1e-4):
    """The Hessian of a scalar NumPy function at x (flat, float64) by nested central
    differences."""
    n = x.size
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            def at(di, dj):
                y = x.copy()
                y[i] += di
                y[j] += dj
                return loss(y)
            H[i, j] = (at(eps, eps) - at(eps, -eps) - at(-eps, eps) + at(-eps, -eps)) / (4 * eps**2)
    return H


def test_second_derivatives_through_library_op_backward(rng):
    a, b = rng.uniform(0.5, 1.5, 3), rng.uniform(-1, 1, 3)
    w, v = rng.normal(size=3), rng.normal(size=6)
    H = fd_hessian(lambda z: float(np.sum(w * z[:3] ** 2 * np.sin(z[3:]))), np.concatenate([a, b]))

    x, y = ag.tensor(a, requires_grad=True), ag.tensor(b, requires_grad=True)
    ga, gb = ag.grad((SquareSin.apply(x, y) * ag.tensor(w)).sum(), [x, y], create_graph=True)
    assert ga.requires_grad and gb.requires_grad
    ha, hb = ag.grad((ga * ag.tensor(v[:3])).sum() + (gb * ag.tensor(v[3:])).sum(), [x, y])
    np.testing.assert_allclose(np.concatenate([ha.numpy(), hb.numpy()]), H @ v, rtol=1e-5,
                               atol=1e-6)


def test_second_derivative_through_a_saved_output(rng):
    """d2/dx2 sum(w exp(x)) = w exp(x) (by hand), and by nested differences."""
    a, w = rng.uniform(-1, 1, 4), rng.normal(size=4)
    x = ag.tensor(a, requires_grad=True)
    (g,) = ag.grad((Exp.apply(x) * ag.tensor(w)).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), w * np.exp(a), rtol=1e-12)
    (h,) = ag.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), w * np.exp(a), rtol=1e-12)
    H = fd_hessian(lambda z: float(np.sum(w * np.exp(z))), a)
    np.testing.assert_allclose(h.numpy(), H.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_hessian_and_hvp_through_backward_and_jvp():
    """Forward over reverse through a custom op: hessian(sum(k x^3)) = diag(6 k x) by hand."""
    a = np.array([0.5, -1.0, 2.0])
    H = ag.hessian(lambda x: Cube.apply(x, 2.0).sum(), ag.tensor(a))
    np.testing.assert_allclose(H.numpy(), np.diag(12.0 * a), rtol=1e-12)
    hv = ag.hvp(lambda x: Cube.apply(x, 2.0).sum(), ag.tensor(a), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(hv.numpy(), 12.0 * a * [1.0, 2.0, 3.0], rtol=1e-12)


# ---- the same function with catalogue ops ------------------------------------------------------


class NumpySoftplusTimes(ag.Function):
    """y = softplus(x) * w, in NumPy, backward in NumPy."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        X, W = x.numpy(), w.numpy()
        return T(np.logaddexp(0.0, X) * W, x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        X, W, G = x.numpy(), w.numpy(), g.numpy()
        return T(G * W / (1.0 + np.exp(-X)), g.dtype), T(G * np.logaddexp(0.0, X), g.dtype)

    @staticmethod
    def jvp(ctx, tx, tw):
        x, w = ctx.saved_tensors
        X, W = x.numpy(), w.numpy()
        out = np.zeros(np.broadcast_shapes(X.shape, W.shape))
        if tx is not None:
            out = out + tx.numpy() * W / (1.0 + np.exp(-X))
        if tw is not None:
            out = out + tw.numpy() * np.logaddexp(0.0, X)
        return T(out, x.dtype)


def test_same_values_and_gradients_as_catalogue_ops(rng):
    a, b = rng.normal(size=(3, 4)) * 3, rng.normal(size=(4,))
    seed = rng.normal(size=(3, 4))
    results = []
    for f in (NumpySoftplusTimes.apply, lambda x, w: ag.softplus(x) * w):
        x, w = ag.tensor(a, requires_grad=True), ag.tensor(b, requires_grad=True)
        y = f(x, w)
        gx, gw = ag.grad(y, [x, w], grad_outputs=[seed])
        _, tan = ag.jvp(f, [ag.tensor(a), ag.tensor(b)], [ag.tensor(seed), ag.tensor(b * 0.5)])
        results.append([y.numpy(), gx.numpy(), gw.numpy(), tan.numpy()])
    for mine, catalogue in zip(*results):
        np.testing.assert_allclose(mine, catalogue, rtol=1e-12, atol=1e-14)


def test_jvp_matches_finite_differences(rng):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4,))
    ta, tb = rng.normal(size=(3, 4)), rng.normal(size=(4,))
    eps = 1e-6

    def ref(x, w):
        return np.logaddexp(0.0, x) * w
    want = (ref(a + eps * ta, b + eps * tb) - ref(a - eps * ta, b - eps * tb)) / (2 * eps)
    out, tan = ag.jvp(NumpySoftplusTimes.apply, [ag.tensor(a), ag.tensor(b)],
                      [ag.tensor(ta), ag.tensor(tb)])
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-12)
    np.testing.assert_allclose(tan.numpy(), want, rtol=1e-6, atol=1e-8)
    # a non-Tensor argument: its tangent is None
    out, tan = ag.jvp(lambda x: Cube.apply(x, 0.5), ag.tensor([1.0, -2.0]), [1.0, 3.0])
    np.testing.assert_allclose(tan.numpy(), [1.5 * 1.0, 1.5 * 4.0 * 3.0], rtol=1e-12)


# ---- the PyTorch API details ---------------------------------------------------------------------


def test_non_tensor_arguments_needs_input_grad_and_layouts():
    seen = []

    class Axpy(ag.Function):
        @staticmethod
        def forward(ctx, alpha, x, label, y):
            seen.append(("forward", ctx.needs_input_grad, label))
            ctx.alpha = alpha
            return x * alpha + y

        @staticmethod
        def backward(ctx, g):
            seen.append(("backward", ctx.needs_input_grad))
            return None, g * ctx.alpha, None, g

    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = ag.tensor([3.0, 4.0])
    out = Axpy.apply(2.0, x, "first", y)
    np.testing.assert_array_equal(out.numpy(), [5.0, 8.0])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
    assert seen == [("forward", (False, True, False, False), "first"),
                    ("backward", (False, True, False, False))]
    # other constants: another op of the class; both requiring grad: both needed
    y.requires_grad = True
    gx, gy = ag.grad(Axpy.apply(-1.0, x, "second", y).sum(), [x, y])
    np.testing.assert_array_equal(gx.numpy(), [-1.0, -1.0])
    np.testing.assert_array_equal(gy.numpy(), [1.0, 1.0])
    assert seen[-2:] == [("forward", (False, True, False, True), "second"),
                         ("backward", (False, True, False, True))]
    # an unhashable constant (a NumPy array): an op for this application only
    seen.clear()
    out = Axpy.apply(np.float64(3.0), x, np.array([1, 2]), y)
    np.testing.assert_array_equal(out.numpy(), [6.0, 10.0])


def test_identity_op_and_borrowed_gradient():
    class Ident(ag.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g

    x = ag.tensor([1.0, -2.0], requires_grad=True)
    y = Ident.apply(x)
    assert y is not x and y.requires_grad and not y.is_leaf
    np.testing.assert_array_equal(y.numpy(), [1.0, -2.0])
    (y * ag.tensor([3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_setup_context_style_and_saved_none():
    class Mul(ag.Function):
        @staticmethod
        def forward(a, b):
            return a * b

        @staticmethod
        def setup_context(ctx, inputs, output):
            a, b = inputs
            ctx.save_for_backward(a, None, b)

        @staticmethod
        def backward(ctx, g):
            a, nothing, b = ctx.saved_tensors
            assert nothing is None
            return g * b, g * a

    a, b = ag.tensor([2.0, 3.0], requires_grad=True), ag.tensor([5.0, 7.0], requires_grad=True)
    ga, gb = ag.grad(Mul.apply(a, b).sum(), [a, b])
    np.testing.assert_array_equal(ga.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(gb.numpy(), [2.0, 3.0])


def test_tuple_of_one_and_no_tensor_arguments():
    class One(ag.Function):
        @staticmethod
        def forward(ctx, x):
            return (x * 2,)

        @staticmethod
        def backward(ctx, g):
            return g * 2

    out = One.apply(ag.tensor([1.0], requires_grad=True))
    assert isinstance(out, tuple) and len(out) == 1
    np.testing.assert_array_equal(out[0].numpy(), [2.0])

    class Make(ag.Function):
        @staticmethod
        def forward(ctx, n):
            assert ctx.needs_input_grad == (False,)
            return ag.arange(n)

    t = Make.apply(3)
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, 2.0])
    assert not t.requires_grad


def test_output_count_learned_on_first_apply_runs_forward_once():
    calls = []

    class Three(ag.Function):
        @staticmethod
        def forward(ctx, x):
            calls.append(1)
            return x + 1, x + 2, x + 3

        @staticmethod
        def backward(ctx, g1, g2, g3):
            return g1 + 2 * g2 + 3 * g3

    x = ag.tensor(1.0, requires_grad=True)
    a, b, c = Three.apply(x)
    assert [t.item() for t in (a, b, c)] == [2.0, 3.0, 4.0]
    assert len(calls) == 1
    (a + b + c).backward()
    assert x.grad.item() == 6.0
    Three.apply(x)
    assert len(calls) == 2


def test_no_grad_records_nothing_and_misuse():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    with ag.no_grad():
        y = SinTimes.apply(x)
    assert not y.requires_grad
    with pytest.raises(TypeError, match="positional"):
        SinTimes.apply(x=x)
    with pytest.raises(TypeError, match="apply"):
        SinTimes()
    with pytest.raises(TypeError):
        ag.Function.apply(x)


class Slope(ag.Function):
    """y = x^2, its derivative 2x kept as a NumPy array on ctx (not a saved tensor): backward and
    jvp read the very ctx their forward filled, so a stale one gives a wrong gradient."""

    ctxs = []  # weak references to each forward's ctx

    @staticmethod
    def forward(ctx, x):
        Slope.ctxs.append(weakref.ref(ctx))
        ctx.slope = 2 * x.numpy()
        return T(x.numpy() ** 2, x.dtype)

    @staticmethod
    def backward(ctx, g):
        return T(g.numpy() * ctx.slope, g.dtype)

    @staticmethod
    def jvp(ctx, t):
        return T(t.numpy() * ctx.slope, t.dtype)


def test_recompute_reruns_forward_also_when_ctx_has_attributes():
    with ag.recomputable():
        x = ag.tensor([1.0, 2.0], requires_grad=True)
        y = SinTimes.apply(x)  # no ctx attributes: only inputs saved
    with ag.no_grad():
        x.set_data([0.5, 3.0])
    y.recompute()
    np.testing.assert_allclose(y.numpy(), [0.5 * np.sin(0.5), 3.0 * np.sin(3.0)], rtol=1e-15)
    with ag.recomputable():
        z = Cube.apply(x, 2.0)  # ctx.k: the application's state, nothing saved but x
    with ag.no_grad():
        x.set_data([1.5, -1.0])
    z.recompute()
    np.testing.assert_allclose(z.numpy(), [2 * 1.5 ** 3, -2.0], rtol=1e-15)
    (g,) = ag.grad(z.sum(), x, retain_graph=True)
    np.testing.assert_allclose(g.numpy(), [6 * 1.5 ** 2, 6.0], rtol=1e-15)  # 3 k x^2
    # The rerun forward's ctx replaces the first (released at once); backward reads the new one.
    with ag.recomputable():
        w = ag.tensor([1.0, 2.0], requires_grad=True)
        v = Slope.apply(w)
    first = Slope.ctxs[-1]
    with ag.no_grad():
        w.set_data([3.0, -4.0])
    v.recompute()
    assert first() is None and Slope.ctxs[-1]() is not None
    np.testing.assert_array_equal(v.numpy(), [9.0, 16.0])
    (g,) = ag.grad(v.sum(), w)
    np.testing.assert_array_equal(g.numpy(), [6.0, -8.0])


def test_ctx_attributes_reach_backward_and_jvp_of_their_application():
    seen = {}

    class Tagged(ag.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.k = k
            seen[("forward", k)] = ctx
            return T(k * x.numpy(), x.dtype)

        @staticmethod
        def backward(ctx, g):
            seen[("backward", ctx.k)] = ctx
            return g * ctx.k, None

        @staticmethod
        def jvp(ctx, t, tk):
            seen[("jvp", ctx.k)] = ctx
            return t * ctx.k

    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y2, y5 = Tagged.apply(x, 2.0), Tagged.apply(x, 5.0)  # two applications alive at once
    (g5,) = ag.grad(y5.sum(), x)
    (g2,) = ag.grad(y2.sum(), x)
    np.testing.assert_array_equal(g2.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(g5.numpy(), [5.0, 5.0])
    for k in (2.0, 5.0):
        assert seen[("backward", k)] is seen[("forward", k)]  # the very object forward filled
    out, tangent = ag.jvp(lambda a: Tagged.apply(a, 7.0), x, np.array([1.0, -1.0]))
    np.testing.assert_array_equal(out.numpy(), [7.0, 14.0])
    np.testing.assert_array_equal(tangent.numpy(), [7.0, -7.0])
    assert seen[("jvp", 7.0)] is seen[("forward", 7.0)]


def test_ctx_is_released_when_its_application_is_over(no_leaks):
    """The ctx (the application's state) goes with the graph: freed, released by a backward
    without retain_graph, or at once after forward and jvp when nothing is recorded."""
    Slope.apply(ag.tensor([0.0]))  # the op is made before counting
    gc.collect()
    contexts = len(F._contexts)
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = Slope.apply(x)
    ref = Slope.ctxs[-1]
    assert ref() is not None and len(F._contexts) == contexts + 1
    del y
    assert ref() is None and len(F._contexts) == contexts  # the graph freed: no gc needed
    y = Slope.apply(x)
    ref = Slope.ctxs[-1]
    (g,) = ag.grad(y.sum(), x)
    np.testing.assert_array_equal(g.numpy(), [2.0, 4.0])
    assert ref() is None  # released by the backward, y still alive
    with ag.no_grad():
        Slope.apply(x)
    assert Slope.ctxs[-1]() is None  # nothing recorded
    _, t = ag.jvp(Slope.apply, ag.tensor([3.0]), np.array([1.0]))
    np.testing.assert_array_equal(t.numpy(), [6.0])  # the jvp read it ...
    assert Slope.ctxs[-1]() is None  # ... and it went with the pass
    assert len(F._contexts) == contexts
    del y, g, t


def test_compiled_replays_see_the_ctx_their_own_forward_set(rng):
    def f(x):
        y = Slope.apply(x)
        (g,) = ag.grad(y.sum(), x)
        return y, g

    gc.collect()
    contexts = len(F._contexts)
    step = ag.compile(f)
    for k in range(4):
        a = rng.normal(size=3)
        before = len(Slope.ctxs)
        y, g = step(ag.tensor(a, requires_grad=True))
        assert len(Slope.ctxs) == before + 1  # forward ran again (a new ctx) ...
        np.testing.assert_array_equal(y.numpy(), a * a)
        np.testing.assert_array_equal(g.numpy(), 2 * a)  # ... and backward read that one
        assert len(F._contexts) <= contexts + 1  # the previous replay's ctx is gone
    assert step.cache_info().hits == 2  # the first call learnt the output count (2)
    del step
    gc.collect()
    assert len(F._contexts) == contexts  # the last one went with the compiled function


# ---- errors ----------------------------------------------------------------------------------------


class Failing(ag.Function):
    """Raises in the callback named by `where` (class attribute set per test)."""

    where = None

    @staticmethod
    def forward(ctx, x):
        if Failing.where == "forward":
            raise ValueError("bad forward")
        return x * 2

    @staticmethod
    def backward(ctx, g):
        if Failing.where == "backward":
            raise KeyError("bad backward")
        return g * 2

    @staticmethod
    def jvp(ctx, t):
        if Failing.where == "jvp":
            raise ZeroDivisionError("bad jvp")
        return t * 2


def _chained(excinfo, kind, text):
    exc = excinfo.value
    assert type(exc) is kind
    cause = exc.__cause__
    assert isinstance(cause, ag.CallbackError) and cause.status == ERR_CALLBACK
    assert "Failing" in cause.message and text in cause.message, cause.message


@pytest.fixture
def failing():
    Failing.where = None
    Failing.apply(ag.tensor([0.0]))  # its op is made here, before a leak check starts
    yield Failing
    Failing.where = None


def test_forward_exception_surfaces_from_apply(failing, no_leaks):
    failing.where = "forward"
    x = ag.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="bad forward") as info:
        failing.apply(x)
    _chained(info, ValueError, "ValueError('bad forward')")
    failing.where = None
    np.testing.assert_array_equal(failing.apply(x).numpy(), [2.0])  # still usable


def test_backward_exception_surfaces_from_backward_and_grad(failing, no_leaks):
    x = ag.tensor([1.0], requires_grad=True)
    failing.where = "backward"
    y = failing.apply(x).sum()
    with pytest.raises(KeyError) as info:
        y.backward()
    _chained(info, KeyError, "KeyError('bad backward')")
    with pytest.raises(KeyError) as info:
        ag.grad(failing.apply(x).sum(), x)
    _chained(info, KeyError, "bad backward")
    with pytest.raises(KeyError):
        ag.vjp(failing.apply, x, [1.0])
    failing.where = None
    assert ag.grad(failing.apply(x).sum(), x)[0].item() == 2.0


def test_jvp_exception_surfaces_from_the_transform(failing, no_leaks):
    failing.where = "jvp"
    with pytest.raises(ZeroDivisionError) as info:
        ag.jvp(failing.apply, ag.tensor([1.0]), [1.0])
    exc = info.value
    assert isinstance(exc.__cause__, ag.CallbackError)  # ag_jvp's, which quotes the op's
    assert "bad jvp" in exc.__cause__.message
    # crossing the build function, the library's errors chain: ag_jvp's <- ag_custom_op_apply's
    inner = exc.__cause__.__cause__
    assert isinstance(inner, ag.CallbackError) and "custom op 'Failing'" in inner.message


def test_exception_with_its_own_cause_keeps_it():
    class Own(ag.Function):
        @staticmethod
        def forward(ctx, x):
            try:
                {}["missing"]
            except KeyError as e:
                raise RuntimeError("wrapped") from e

    with pytest.raises(RuntimeError, match="wrapped") as info:
        Own.apply(ag.tensor([1.0]))
    assert isinstance(info.value.__cause__, KeyError)
    assert any("custom op 'Own'" in note for note in info.value.__notes__)


def test_library_error_inside_forward_keeps_its_type():
    class BadShapes(ag.Function):
        @staticmethod
        def forward(ctx, x):
            return x + ag.zeros(7)

    with pytest.raises(ag.ShapeError) as info:
        BadShapes.apply(ag.tensor([1.0, 2.0]))
    assert isinstance(info.value.__cause__, ag.CallbackError)


def _contract_op(backward=None, forward=None, jvp=None):
    body = {"forward": staticmethod(forward or (lambda ctx, x, k: x * 2))}
    if backward is not None:
        body["backward"] = staticmethod(backward)
    if jvp is not None:
        body["jvp"] = staticmethod(jvp)
    return type("Contract", (ag.Function,), body)


@pytest.mark.parametrize("backward, message", [
    (lambda ctx, g: g, "returned 1 gradients, forward took 2 arguments"),
    (lambda ctx, g: (g, g), "gradient for argument 1, which is not a Tensor"),
    (lambda ctx, g: (ag.ones(2, 4), None), "of shape [2, 4] for input 0 of shape [3]"),
    (lambda ctx, g: (ag.ones(3, dtype=ag.float32), None), "as float32, input 0 is float64"),
    (lambda ctx, g: (np.ones(3), None), "must be a Tensor or None, not ndarray"),
    (lambda ctx, g: (g, None, g), "returned 3 gradients"),
], ids=["too-few", "non-tensor-argument", "shape", "dtype", "ndarray", "too-many"])
def test_broken_backward_contract_is_a_callback_error(backward, message, no_leaks):
    op = _contract_op(backward)
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(ag.CallbackError) as info:
        op.apply(x, 1).sum().backward()
    assert message in info.value.message, info.value.message
    assert info.value.__cause__ is None
    del op, info
    gc.collect()


@pytest.mark.parametrize("forward, message", [
    (lambda ctx, x, k: x.numpy(), "must return a Tensor or a tuple of Tensors, not ndarray"),
    (lambda ctx, x, k: (x, 3.0), "output 1 is a float"),
    (lambda ctx, x, k: (), "empty tuple"),
    (lambda ctx, x, k: (x * 1, ag.ones(3, dtype=ag.float32)), "share one dtype"),
], ids=["ndarray", "float", "empty", "dtypes"])
def test_broken_forward_contract_is_a_callback_error(forward, message, no_leaks):
    op = _contract_op(forward=forward)
    with pytest.raises(ag.CallbackError) as info:
        op.apply(ag.tensor([1.0, 2.0, 3.0]), 1)
    assert message in info.value.message, info.value.message
    del op, info
    gc.collect()


def test_broken_jvp_contract_and_missing_callbacks(no_leaks):
    x = ag.tensor([1.0, 2.0, 3.0])
    op = _contract_op(jvp=lambda ctx, t, k: (t, t))
    with pytest.raises(ag.CallbackError) as info:
        ag.jvp(lambda a: op.apply(a, 1), x, [1.0, 1.0, 1.0])
    assert "returned 2 tangents" in info.value.message
    op = _contract_op(jvp=lambda ctx, t, k: ag.ones(2))
    with pytest.raises(ag.CallbackError) as info:
        ag.jvp(lambda a: op.apply(a, 1), x, [1.0, 1.0, 1.0])
    assert "the JVP returned tangent 0" in info.value.message
    # no jvp: StateError from apply inside the transform's function
    op = _contract_op()
    with pytest.raises(ag.CallbackError) as info:
        ag.jvp(lambda a: op.apply(a, 1), x, [1.0, 1.0, 1.0])
    assert isinstance(info.value.__cause__, ag.StateError)
    assert "without a JVP" in info.value.__cause__.message
    # no backward: StateError from the backward through it
    y = op.apply(ag.tensor([1.0], requires_grad=True), 1)
    assert y.requires_grad
    with pytest.raises(ag.StateError, match="without a backward"):
        y.sum().backward()
    del op, y, info
    gc.collect()


# ---- capture (compile) ------------------------------------------------------------------------------


class ScaledSquare(ag.Function):
    """y = s x^2 w (x (3,), w (2, 3)), s a ctx attribute: each replay's backward reads the ctx
    of the replay's forward (the application's state)."""

    forwards = 0
    backwards = 0

    @staticmethod
    def forward(ctx, x, w, s):
        ScaledSquare.forwards += 1
        ctx.s = s
        ctx.save_for_backward(x, w)
        return T(s * x.numpy() ** 2 * w.numpy(), x.dtype)

    @staticmethod
    def backward(ctx, g):
        ScaledSquare.backwards += 1
        x, w = ctx.saved_tensors
        return g * (2 * ctx.s) * x * w, g * ctx.s * x * x, None


def _step(x, w):
    y = ScaledSquare.apply(x, w, 1.5)
    loss = (y * y).sum()
    gx, gw = ag.grad(loss, [x, w])
    return loss, gx, gw


def test_compiled_replay_equals_eager_and_calls_the_callbacks(rng):
    step = ag.compile(_step)
    for k in range(4):
        a, b = rng.normal(size=3), rng.normal(size=(2, 3))
        eager = _step(ag.tensor(a, requires_grad=True), ag.tensor(b, requires_grad=True))
        before = (ScaledSquare.forwards, ScaledSquare.backwards)
        replayed = step(ag.tensor(a, requires_grad=True), ag.tensor(b, requires_grad=True))
        assert (ScaledSquare.forwards - before[0], ScaledSquare.backwards - before[1]) == (1, 1)
        for e, r in zip(eager, replayed):
            assert e.numpy().tobytes() == r.numpy().tobytes()
    info = step.cache_info()
    # the first call learns the output count (3), the second captures, the rest replay
    assert (info.misses, info.captures, info.hits) == (2, 1, 2)
    del step  # the last replay's ctx is the captured function's until it goes
    gc.collect()
    assert not F._contexts  # every replay's ctx was released with it


def test_exception_in_a_replay_surfaces_from_the_compiled_call():
    class Flaky(ag.Function):
        fail = False

        @staticmethod
        def forward(ctx, x):
            if Flaky.fail:
                raise OverflowError("replay failed")
            return x * 3

        @staticmethod
        def backward(ctx, g):
            return g * 3

    f = ag.compile(lambda x: Flaky.apply(x) + 1)
    np.testing.assert_array_equal(f(ag.tensor([1.0])).numpy(), [4.0])
    np.testing.assert_array_equal(f(ag.tensor([2.0])).numpy(), [7.0])
    Flaky.fail = True
    with pytest.raises(OverflowError) as info:
        f(ag.tensor([3.0]))
    assert isinstance(info.value.__cause__, ag.CallbackError)
    # and raised in the capture: through the capture function
    g = ag.compile(lambda x: Flaky.apply(x) * 2)
    with pytest.raises(OverflowError):
        g(ag.tensor([3.0]))


# ---- threads ------------------------------------------------------------------------------------------


def test_four_threads_apply_one_function_concurrently():
    class Affine(ag.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.k = k  # per application: must not leak between threads
            ctx.save_for_backward(x)
            return T(k * x.numpy() ** 2, x.dtype)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return T(g.numpy() * 2 * ctx.k * x.numpy(), g.dtype), None

    errors, barrier = [], threading.Barrier(4)

    def worker(t):
        try:
            barrier.wait()
            rng = np.random.default_rng(t)
            for i in range(25):
                k = float(t * 100 + i)
                a = rng.normal(size=5)
                x = ag.tensor(a, requires_grad=True)
                y = Affine.apply(x, k)
                (g,) = ag.grad(y.sum(), x)
                np.testing.assert_allclose(y.numpy(), k * a * a, rtol=1e-14)
                np.testing.assert_allclose(g.numpy(), 2 * k * a, rtol=1e-14)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


# ---- lifetimes and leaks -------------------------------------------------------------------------


def test_ctx_objects_and_ops_are_released_with_their_graphs(no_leaks):
    refs = []

    class Keep(ag.Function):
        @staticmethod
        def forward(ctx, x, tag):
            ctx.tag = tag
            refs.append(weakref.ref(ctx))
            return x * 2

        @staticmethod
        def backward(ctx, g):
            assert ctx.tag == "kept"
            return g * 2, None

    x = ag.tensor([1.0, 2.0], requires_grad=True)
    contexts = len(F._contexts)
    y = Keep.apply(x, "kept")
    assert refs[-1]() is not None and len(F._contexts) == contexts + 1
    del y
    gc.collect()
    assert refs[-1]() is None and len(F._contexts) == contexts  # graph freed: ctx too

    y = Keep.apply(x, "kept")
    y.sum().backward(retain_graph=True)
    assert refs[-1]() is not None  # retained: backward can run again and needs it
    y.sum().backward()
    assert refs[-1]() is None  # the second backward released the graph's saved values

    with ag.no_grad():
        Keep.apply(x, "kept")
    assert refs[-1]() is None  # nothing recorded: nothing kept

    records = len(F._records)
    Keep.apply(x, np.zeros(2))  # an unhashable constant: an op of its own, gone with its graph
    gc.collect()
    assert len(F._records) == records
    del Keep, y  # the class's cached ops go with it
    gc.collect()


def test_a_ctx_without_attributes_is_not_kept(no_leaks):
    refs = []

    class Plain(ag.Function):
        @staticmethod
        def forward(ctx, x):
            refs.append(weakref.ref(ctx))
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            refs.append(weakref.ref(ctx))
            (x,) = ctx.saved_tensors
            return 2 * g * x

    x = ag.tensor([3.0], requires_grad=True)
    y = Plain.apply(x)
    gc.collect()
    assert refs[0]() is None  # backward gets a ctx of its own with the saved tensors
    y.backward()
    assert x.grad.item() == 6.0
    del y, Plain
    gc.collect()


def test_handles_are_back_to_start_after_many_applications():
    x = ag.tensor(np.linspace(-1, 1, 6), requires_grad=True)
    for op, args in ((Cube, (x, 2.0)), (Cube, (x, 1.0)), (Mix, (x, x, x)), (SinCos, (x,))):
        out = op.apply(*args)  # warm up: each op (class and constants) is made once
        outs = out if isinstance(out, tuple) else (out,)
        sum(o.sum() for o in outs).backward()
    del out, outs
    gc.collect()
    start, contexts, records = ag.live_handle_count(), len(F._contexts), len(F._records)
    for _ in range(5):
        (g,) = ag.grad(Cube.apply(x, 2.0).sum(), x, create_graph=True)
        ag.grad(g.sum(), x)
        u, v = Mix.apply(x, x, x)
        (u.sum() + v.sum()).backward()
        s, c = SinCos.apply(x)
        ag.jvp(lambda a: Cube.apply(a, 1.0), x, np.ones(6))
    del g, u, v, s, c
    gc.collect()
    assert ag.live_handle_count() == start
    assert (len(F._contexts), len(F._records)) == (contexts, records)


# ---- the example --------------------------------------------------------------------------------


def test_ode_fit_example_recovers_the_parameters():
    path = os.path.join(ROOT, "examples", "ode_fit.py")
    if not os.path.isfile(path):
        pytest.skip("examples/ode_fit.py is not beside this test (installed elsewhere)")
    done = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gradcheck of the hand-written adjoint: passed" in done.stdout
    assert done.stdout.rstrip().endswith("recovered")


def test_first_application_learning_the_output_count_keeps_saved_identities():
    """The op is made again with 2 outputs from forward's one run: the saved input and output
    are still those tensors (second derivative through the saved output: exp by hand), and an
    argument forward kept as a ctx attribute stays usable (its values)."""

    class ExpAndTwice(ag.Function):
        @staticmethod
        def forward(ctx, x):
            y = T(np.exp(x.numpy()), x.dtype)
            ctx.x = x
            ctx.save_for_backward(x, y)
            return y, x * 2

        @staticmethod
        def backward(ctx, g1, g2):
            x, y = ctx.saved_tensors
            np.testing.assert_array_equal(ctx.x.numpy(), x.numpy())
            return g1 * y + g2 * 2

    a = np.array([0.5, 1.0])
    x = ag.tensor(a, requires_grad=True)
    y, z = ExpAndTwice.apply(x)
    (g,) = ag.grad(y.sum() + z.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), np.exp(a) + 2, rtol=1e-15)
    (h,) = ag.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), np.exp(a), rtol=1e-15)
