"""The function transforms (jvp, vjp, jacobian, hvp, hessian) against JAX, in float64.

(a) jvp of every operation of the catalogue (the cases of test_ops_vs_jax, which every op has)
    against jax.jvp, and vjp of each against jax.vjp;
(b) 104 random functions drawn from the whole catalogue (compositions of 2 to 5 operations:
    unary, binary with broadcasting, scalar forms, reductions, shape operations, indexing,
    matrix products, softmax and losses, on random shapes): jacobian in both modes against
    jax.jacrev or jax.jacfwd (alternately: the same matrix), and for the scalar-valued half
    jacobian against jax.grad and hessian against jax.hessian (jax.jacfwd of jax.grad);
(c) hvp (forward over reverse) against reverse over reverse (grad of grad with create_graph),
    and against the jvp of a vjp;
and the errors: an exception raised in the function (CallbackError, chained), tangents and
cotangents of the wrong shape or dtype, non-scalar functions for hvp and hessian, forward mode
inside forward mode.

The JAX references are computed by a few jit-compiled functions (compiling is what costs time
here; libautograd's side takes milliseconds). Forward mode goes through each operation's JVP, so (a)'s jvp, (b)'s forward-mode Jacobians and
Hessians and (c) need the JVP of every operation the function uses.
"""

import functools
import gc
import inspect
import zlib

import numpy as np
import pytest

import libautograd as ag
from libautograd import ops as ag_ops

jax = pytest.importorskip("jax")
jnp = jax.numpy
jnn = jax.nn

from test_ops_vs_jax import CASES, COMPARISONS, _draw  # noqa: E402 (the catalogue's cases)

TOL = dict(rtol=1e-9, atol=1e-10)

# XLA options that cut compiling the references by three quarters (results differ by an ulp or
# two from the optimised build, far inside TOL).
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                  "xla_cpu_use_fusion_emitters": False}


def _run_compiled(fn, args):
    """fn(args), compiled by XLA with _QUICK_COMPILE (or plainly, if this XLA lacks an option)."""
    lowered = jax.jit(fn).lower(args)
    try:
        compiled = lowered.compile(compiler_options=_QUICK_COMPILE)
    except Exception:  # noqa: BLE001 - an option this jaxlib does not know
        compiled = lowered.compile()
    return compiled(args)


@pytest.fixture
def no_handles_kept():
    """no_leaks, with gc.collect() (~0.1 s each once JAX has compiled much) only when handles
    are left: a test that raises nothing frees its Tensors by reference counting alone. (Fewer
    at the end than at the start is no leak: an earlier failure's traceback let go of some.)"""
    start = ag.live_handle_count()
    yield
    if ag.live_handle_count() > start:
        gc.collect()
    assert ag.live_handle_count() <= start


def _close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got, want, **TOL, err_msg=what)


# ---- (a) jvp and vjp of every operation --------------------------------------------------------

def _covered(op_name):
    """Whether an op of libautograd.ops has a case (its name, or name_something)."""
    aliases = {"cat": "concat_axis1"}
    name = aliases.get(op_name, op_name)
    return any(k == name or k.startswith(name + "_") for k in list(CASES) + list(COMPARISONS))


def test_every_operation_has_a_case():
    # inspect.unwrap: with the compiled extension, some are Ops wrapping the Python function
    ops = [n for n, f in inspect.getmembers(ag_ops, lambda f: inspect.isfunction(inspect.unwrap(f)))
           if not n.startswith("_") and f.__module__ == ag_ops.__name__]
    assert len(ops) > 40
    missing = [n for n in ops if not _covered(n)]
    assert not missing, f"operations without a case in test_ops_vs_jax: {missing}"


def _case_inputs(name):
    """The case's primals, tangents and cotangent (seeded by its name)."""
    specs, lib_fn, jax_fn = CASES[name]
    rng = np.random.default_rng(zlib.crc32(b"jvp " + name.encode()))
    data = [_draw(rng, shape, domain) for shape, domain in specs]
    tangents = [rng.normal(size=shape) for shape, _ in specs]
    out_shape = jax.eval_shape(jax_fn, *[jnp.asarray(d) for d in data]).shape
    return data, tangents, rng.normal(size=out_shape)


@functools.lru_cache(maxsize=None)
def _case_references():
    """jax.jvp and jax.vjp of every case, computed in one compiled function (compiling each
    case alone would cost more than all the rest of this file)."""
    names = sorted(CASES)
    inputs = [_case_inputs(n) for n in names]

    def refs(arrays):
        out = {}
        for name, (data, tangents, cot) in zip(names, arrays):
            jax_fn = CASES[name][2]
            y, ty = jax.jvp(jax_fn, tuple(data), tuple(tangents))
            _, pullback = jax.vjp(jax_fn, *data)
            out[name] = (y, ty, pullback(cot))
        return out

    arrays = [([jnp.asarray(d) for d in data], [jnp.asarray(t) for t in tangents], jnp.asarray(cot))
              for data, tangents, cot in inputs]
    return dict(zip(names, inputs)), _run_compiled(refs, arrays)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_and_vjp_of_each_operation(name, no_handles_kept):
    inputs, refs = _case_references()
    data, tangents, cot = inputs[name]
    want, want_tan, want_grads = refs[name]
    lib_fn = CASES[name][1]
    primals = [ag.tensor(d) for d in data]

    out, tan = ag.jvp(lib_fn, primals, [ag.tensor(t) for t in tangents])
    _close(out.numpy(), want, f"{name}: jvp output")
    _close(tan.numpy(), want_tan, f"{name}: jvp tangent")

    out, grads = ag.vjp(lib_fn, primals, ag.tensor(cot))
    _close(out.numpy(), want, f"{name}: vjp output")
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        _close(g.numpy(), w, f"{name}: vjp gradient {i}")


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_jvp_of_comparisons_is_zero(name):
    lib_fn, ref = COMPARISONS[name]
    rng = np.random.default_rng(5)
    a, b = rng.integers(-2, 3, (3, 4)).astype(float), rng.normal(size=(4,))
    out, tan = ag.jvp(lambda x, y: lib_fn(x, y), [ag.tensor(a), ag.tensor(b)],
                      [ag.ones((3, 4)), ag.ones(4)])
    np.testing.assert_array_equal(out.numpy(), ref(a, b).astype(float))
    np.testing.assert_array_equal(tan.numpy(), np.zeros((3, 4)))


# ---- (b) random functions: jacobian (both modes) and hessian ------------------------------------

def _bshape(a, b):
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        return None


def _numel(shape):
    return int(np.prod(shape, dtype=np.int64))


# Each op: (arity, result shape or None when it does not apply, libautograd fn, JAX fn). The
# shape function gets the operand shapes and the op's parameters (drawn with it); functions get
# the operands and the parameters. A binary op's second operand is an earlier node or a constant.
def _ops():
    ops = {}

    def unary(name, lib, jx):
        ops[name] = (1, lambda s, p: s[0], lib, jx)

    unary("neg", lambda x, p: -x, lambda x, p: -x)
    unary("exp", lambda x, p: ag.exp(ag.tanh(x)), lambda x, p: jnp.exp(jnp.tanh(x)))
    unary("log", lambda x, p: ag.log(ag.softplus(x) + 0.5), lambda x, p: jnp.log(jnn.softplus(x) + 0.5))
    unary("sqrt", lambda x, p: ag.sqrt(x * x + 1.0), lambda x, p: jnp.sqrt(x * x + 1.0))
    unary("abs", lambda x, p: abs(x), lambda x, p: jnp.abs(x))
    unary("relu", lambda x, p: ag.relu(x), lambda x, p: jnn.relu(x))
    unary("sin", lambda x, p: ag.sin(x), lambda x, p: jnp.sin(x))
    unary("cos", lambda x, p: x.cos(), lambda x, p: jnp.cos(x))
    unary("tanh", lambda x, p: x.tanh(), lambda x, p: jnp.tanh(x))
    unary("sigmoid", lambda x, p: ag.sigmoid(x), lambda x, p: jnn.sigmoid(x))
    unary("gelu", lambda x, p: ag.gelu(x), lambda x, p: jnn.gelu(x, approximate=False))
    unary("softplus", lambda x, p: x.softplus(), lambda x, p: jnn.softplus(x))
    unary("leaky_relu", lambda x, p: ag.leaky_relu(x, 0.2), lambda x, p: jnn.leaky_relu(x, 0.2))
    unary("pow_scalar", lambda x, p: (ag.softplus(x) + 0.5) ** p["c"],
          lambda x, p: (jnn.softplus(x) + 0.5) ** p["c"])
    unary("square", lambda x, p: x ** 2, lambda x, p: x ** 2)
    unary("rpow_scalar", lambda x, p: p["c"] ** ag.tanh(x), lambda x, p: p["c"] ** jnp.tanh(x))
    unary("affine", lambda x, p: x * p["c"] + p["d"], lambda x, p: x * p["c"] + p["d"])
    unary("rsub_scalar", lambda x, p: p["d"] - x, lambda x, p: p["d"] - x)
    unary("rdiv_scalar", lambda x, p: p["c"] / (x * x + 1.0), lambda x, p: p["c"] / (x * x + 1.0))
    unary("div_scalar", lambda x, p: x / p["c"], lambda x, p: x / p["c"])
    unary("maximum_scalar", lambda x, p: ag.maximum(x, p["d"]), lambda x, p: jnp.maximum(x, p["d"]))
    unary("minimum_scalar", lambda x, p: ag.minimum(p["d"], x), lambda x, p: jnp.minimum(p["d"], x))

    def binary(name, lib, jx):
        ops[name] = (2, lambda s, p: _bshape(s[0], s[1]), lib, jx)

    binary("add", lambda a, b, p: a + b, lambda a, b, p: a + b)
    binary("sub", lambda a, b, p: ag.sub(a, b), lambda a, b, p: a - b)
    binary("mul", lambda a, b, p: a * b, lambda a, b, p: a * b)
    binary("div", lambda a, b, p: a / (b * b + 1.0), lambda a, b, p: a / (b * b + 1.0))
    binary("pow", lambda a, b, p: (ag.softplus(a) + 0.5) ** ag.tanh(b),
           lambda a, b, p: (jnn.softplus(a) + 0.5) ** jnp.tanh(b))
    binary("maximum", lambda a, b, p: ag.maximum(a, b), lambda a, b, p: jnp.maximum(a, b))
    binary("minimum", lambda a, b, p: ag.minimum(a, b), lambda a, b, p: jnp.minimum(a, b))
    binary("where", lambda a, b, p: ag.where(a > b, a, b * 2.0), lambda a, b, p: jnp.where(a > b, a, b * 2.0))

    def reduction(name, lib, jx):
        def shape(s, p):
            if len(s[0]) == 0:
                return None
            if p["axis"] is None:
                return tuple(1 for _ in s[0]) if p["keep"] else ()
            ax = p["axis"] % len(s[0])
            return tuple(1 if i == ax else e for i, e in enumerate(s[0])) if p["keep"] else \
                tuple(e for i, e in enumerate(s[0]) if i != ax)
        ops[name] = (1, shape, lib, jx)

    def axis_of(x, p):
        return None if p["axis"] is None else p["axis"] % x.ndim

    reduction("sum", lambda x, p: x.sum(axis_of(x, p), p["keep"]),
              lambda x, p: jnp.sum(x, axis_of(x, p), keepdims=p["keep"]))
    reduction("mean", lambda x, p: ag.mean(x, axis_of(x, p), p["keep"]),
              lambda x, p: jnp.mean(x, axis_of(x, p), keepdims=p["keep"]))
    reduction("max", lambda x, p: ag.max(x, axis_of(x, p), p["keep"]),
              lambda x, p: jnp.max(x, axis_of(x, p), keepdims=p["keep"]))
    reduction("min", lambda x, p: x.min(axis_of(x, p), p["keep"]),
              lambda x, p: jnp.min(x, axis_of(x, p), keepdims=p["keep"]))
    reduction("logsumexp", lambda x, p: ag.logsumexp(x, axis_of(x, p), p["keep"]),
              lambda x, p: jax.scipy.special.logsumexp(x, axis_of(x, p), keepdims=p["keep"]))
    # var over a single element with correction 1 is nan: the population variance then
    reduction("var", lambda x, p: ag.var(x, axis_of(x, p), _corr(x.shape, axis_of(x, p), p), p["keep"]),
              lambda x, p: jnp.var(x, axis_of(x, p), ddof=_corr(x.shape, axis_of(x, p), p), keepdims=p["keep"]))

    def shaped(name, arity, shape, lib, jx):
        ops[name] = (arity, shape, lib, jx)

    shaped("reshape", 1, lambda s, p: (_numel(s[0]),) if s[0] else None,
           lambda x, p: x.reshape(-1), lambda x, p: x.reshape(-1))
    shaped("transpose", 1, lambda s, p: s[0][::-1] if len(s[0]) == 2 else None,
           lambda x, p: ag.transpose(x, 0, 1), lambda x, p: jnp.swapaxes(x, 0, 1))
    shaped("permute", 1, lambda s, p: (s[0][2], s[0][0], s[0][1]) if len(s[0]) == 3 else None,
           lambda x, p: x.permute(2, 0, 1), lambda x, p: jnp.transpose(x, (2, 0, 1)))
    shaped("unsqueeze", 1, lambda s, p: (1,) + s[0] if len(s[0]) < 3 else None,
           lambda x, p: ag.unsqueeze(x, 0), lambda x, p: x[None])
    shaped("squeeze", 1, lambda s, p: s[0][1:] if s[0] and s[0][0] == 1 else None,
           lambda x, p: ag.squeeze(x, 0), lambda x, p: jnp.squeeze(x, 0))
    # expand, then distinct weights, so that no max/min sees ties
    shaped("expand", 1, lambda s, p: (2,) + s[0] if len(s[0]) < 3 and _numel(s[0]) <= 6 else None,
           lambda x, p: ag.expand(x, 2, *x.shape) * ag.tensor(_weights((2,) + x.shape)),
           lambda x, p: jnp.broadcast_to(x, (2,) + x.shape) * _weights((2,) + x.shape))
    shaped("concat", 1, lambda s, p: (2 * s[0][0],) + s[0][1:] if s[0] and _numel(s[0]) <= 8 else None,
           lambda x, p: ag.concat([x, x * 2.0 + 1.0]), lambda x, p: jnp.concatenate([x, x * 2.0 + 1.0]))
    shaped("stack", 1, lambda s, p: (2,) + s[0] if len(s[0]) < 3 and _numel(s[0]) <= 8 else None,
           lambda x, p: ag.stack([x, ag.sin(x)], axis=0), lambda x, p: jnp.stack([x, jnp.sin(x)], axis=0))
    shaped("slice", 1, lambda s, p: (s[0][0] - 1,) + s[0][1:] if s[0] and s[0][0] >= 2 else None,
           lambda x, p: ag.slice(x, 0, 1, None), lambda x, p: x[1:])
    shaped("flip", 1, lambda s, p: s[0] if s[0] else None, lambda x, p: x[::-1], lambda x, p: x[::-1])
    shaped("index_select", 1, lambda s, p: (min(s[0][0], 3),) + s[0][1:] if s[0] else None,
           lambda x, p: x.index_select(0, _perm(p, x.shape[0])),
           lambda x, p: jnp.take(x, _perm(p, x.shape[0]), axis=0))
    shaped("gather", 1, lambda s, p: s[0] if len(s[0]) == 2 else None,
           lambda x, p: ag.gather(x, 1, _gidx(p, x.shape)) * ag.tensor(_weights(x.shape)),
           lambda x, p: jnp.take_along_axis(x, _gidx(p, x.shape), axis=1) * _weights(x.shape))
    # matrix products with constants
    shaped("matmul", 1, lambda s, p: s[0][:-1] + (2,) if len(s[0]) in (1, 2) else None,
           lambda x, p: x @ ag.tensor(_const(p, (x.shape[-1], 2))),
           lambda x, p: x @ _const(p, (x.shape[-1], 2)))
    shaped("rmatmul", 1, lambda s, p: (2,) + s[0][1:] if len(s[0]) in (1, 2) else None,
           lambda x, p: ag.matmul(ag.tensor(_const(p, (2, x.shape[0]))), x),
           lambda x, p: _const(p, (2, x.shape[0])) @ x)
    shaped("dot", 1, lambda s, p: () if len(s[0]) == 1 else None,
           lambda x, p: ag.dot(x, ag.tensor(_const(p, x.shape))), lambda x, p: jnp.dot(x, _const(p, x.shape)))
    shaped("outer", 1, lambda s, p: (s[0][0], 2) if len(s[0]) == 1 and s[0][0] <= 6 else None,
           lambda x, p: ag.outer(x, ag.tensor(_const(p, (2,)))), lambda x, p: jnp.outer(x, _const(p, (2,))))
    shaped("linear", 1, lambda s, p: s[0][:-1] + (2,) if len(s[0]) in (1, 2) else None,
           lambda x, p: ag.linear(x, ag.tensor(_const(p, (2, x.shape[-1]))), ag.tensor(_const(p, (2,)))),
           lambda x, p: x @ _const(p, (2, x.shape[-1])).T + _const(p, (2,)))
    # neural-network functions
    shaped("softmax", 1, lambda s, p: s[0] if s[0] else None,
           lambda x, p: ag.softmax(x, p["ax"] % x.ndim), lambda x, p: jnn.softmax(x, axis=p["ax"] % x.ndim))
    shaped("log_softmax", 1, lambda s, p: s[0] if s[0] else None,
           lambda x, p: x.log_softmax(p["ax"] % x.ndim), lambda x, p: jnn.log_softmax(x, axis=p["ax"] % x.ndim))
    shaped("mse_loss", 1, lambda s, p: (),
           lambda x, p: ag.mse_loss(x, ag.tensor(_const(p, x.shape))),
           lambda x, p: jnp.mean((x - _const(p, x.shape)) ** 2))
    shaped("cross_entropy", 1, lambda s, p: () if len(s[0]) == 2 else None,
           lambda x, p: ag.cross_entropy(x, _labels(p, x.shape)),
           lambda x, p: -jnp.mean(jnn.log_softmax(x, axis=1)[jnp.arange(x.shape[0]), _labels(p, x.shape)]))
    return ops


def _corr(shape, axis, p):
    count = _numel(shape) if axis is None else shape[axis]
    return p["corr"] if count > 1 else 0


def _weights(shape):
    """Fixed distinct positive weights of a shape."""
    return 0.5 + np.arange(_numel(shape), dtype=np.float64).reshape(shape) / 7.0


def _const(p, shape):
    rng = np.random.default_rng(p["seed"] + 31 * len(shape) + sum(shape))
    return rng.normal(size=shape)


def _perm(p, n):
    return np.random.default_rng(p["seed"]).permutation(n)[: min(n, 3)]


def _gidx(p, shape):
    return np.random.default_rng(p["seed"]).integers(0, shape[1], shape)


def _labels(p, shape):
    return np.random.default_rng(p["seed"]).integers(0, shape[1], shape[0])


OPS = _ops()
NAMES = sorted(OPS)
INPUT_SHAPES = [(), (3,), (4,), (2, 3), (3, 2), (2, 2), (1, 3), (2, 1, 2)]
MAX_NUMEL = 24


def _params(rng):
    return {"c": float(rng.choice([0.5, 1.5, 2.0, 3.0])), "d": float(rng.normal()),
            "axis": [None, 0, 1, -1][rng.integers(4)], "keep": bool(rng.integers(2)),
            "corr": int(rng.integers(2)), "ax": int(rng.integers(-2, 2)),
            "seed": int(rng.integers(1 << 30))}


def _generate(rng, scalar, first=None):
    """A random function of one input: its shape and steps (op, operand nodes or a constant,
    params). With `scalar` it ends in a reduction to one element (for the Hessian). `first`
    names its first operation (the input's shape is then one that operation takes)."""
    shapes_for_first = INPUT_SHAPES
    if first is not None:
        p = _params(np.random.default_rng(0))
        shapes_for_first = [s for s in INPUT_SHAPES if OPS[first][1]([s, s], p) is not None]
    x_shape = shapes_for_first[rng.integers(len(shapes_for_first))]
    shapes, steps = [x_shape], []
    target = int(rng.integers(2, 6)) - (1 if scalar else 0)
    tries = 0
    while len(steps) < target and tries < 400:
        tries += 1
        name = first if first is not None and not steps and tries < 50 else NAMES[rng.integers(len(NAMES))]
        arity, out_shape, _, _ = OPS[name]
        a = len(shapes) - 1 if rng.random() < 0.7 else int(rng.integers(len(shapes)))
        operands = [a]
        if arity == 2:
            if rng.random() < 0.5:  # an earlier node (x included)
                operands.append(int(rng.integers(len(shapes))))
            else:  # a constant, of the operand's shape or one that broadcasts with it
                cs = [shapes[a], shapes[a][1:], ()][rng.integers(3)]
                operands.append(("const", cs))
        params = _params(rng)
        op_shapes = [shapes[o] if isinstance(o, int) else o[1] for o in operands]
        shape = out_shape(op_shapes, params)
        if shape is None or _numel(shape) > MAX_NUMEL:
            continue
        steps.append((name, operands, params))
        shapes.append(shape)
    final = None
    if scalar:
        final = ["sum", "mean", "logsumexp"][rng.integers(3)]
    return x_shape, steps, final


def _replay(x, steps, final, backend):
    nodes = [x]
    for name, operands, params in steps:
        fn = OPS[name][2 if backend == "ag" else 3]
        args = []
        for o in operands:
            if isinstance(o, int):
                args.append(nodes[o])
            else:
                c = _const(params, o[1])
                args.append(ag.tensor(c) if backend == "ag" else jnp.asarray(c))
        nodes.append(fn(*args, params))
    y = nodes[-1]
    if final is None:
        return y
    if backend == "ag":
        return {"sum": ag.sum, "mean": ag.mean, "logsumexp": ag.logsumexp}[final](y)
    return {"sum": jnp.sum, "mean": jnp.mean, "logsumexp": jax.scipy.special.logsumexp}[final](y)


N_FUNCTIONS = 104
N_CHUNKS = 8


def _functions(chunk):
    """The chunk's functions; the first operations go round the catalogue, so every operation
    is drawn (the rest of each function is random)."""
    rng = np.random.default_rng(4200 + chunk)
    per_chunk = N_FUNCTIONS // N_CHUNKS
    for k in range(per_chunk):
        scalar = k % 2 == 0
        first = NAMES[(chunk * per_chunk + k) % len(NAMES)]
        x_shape, steps, final = _generate(rng, scalar, first)
        yield k, x_shape, steps, final, rng.normal(size=x_shape)


def _jax_function(steps, final):
    return lambda t: _replay(t, steps, final, "jax")


def _jacobian_references(fns):
    """For each function its Jacobian, the reference of both modes: by jax.jacrev or
    jax.jacfwd (alternately: the same matrix) for a vector-valued function; for a scalar-valued
    one its gradient and Hessian, by jax.hessian's own composition (jax.jacfwd of jax.grad),
    traced once. All compiled as one function: compiling is what costs time here."""
    def refs(xs):
        out = []
        for (k, _, steps, final, _), x in zip(fns, xs):
            f = _jax_function(steps, final)
            if final is None:
                out.append(((jax.jacrev if k % 4 == 1 else jax.jacfwd)(f)(x), None))
            else:
                def grad_twice(t, f=f):
                    g = jax.grad(f)(t)
                    return g, g
                hess, grad = jax.jacfwd(grad_twice, has_aux=True)(x)
                out.append((grad, hess))
        return out
    return _run_compiled(refs, [jnp.asarray(f[4]) for f in fns])


@pytest.mark.parametrize("chunk", range(N_CHUNKS))
def test_random_functions_jacobian_and_hessian(chunk, no_leaks):
    fns = list(_functions(chunk))
    refs = _jacobian_references(fns)
    for (k, x_shape, steps, final, xv), (want_jac, want_hess) in zip(fns, refs):
        where = f"function {chunk}/{k}: x{x_shape} -> {[s[0] for s in steps]} -> {final}"

        def f(t):
            return _replay(t, steps, final, "ag")

        x = ag.tensor(xv)
        _close(ag.jacobian(f, x, mode="rev").numpy(), want_jac, f"{where}: jacobian rev")
        _close(ag.jacobian(f, x, mode="fwd").numpy(), want_jac, f"{where}: jacobian fwd")
        if final is not None:
            _close(ag.hessian(f, x).numpy(), want_hess, f"{where}: hessian")


def test_random_functions_cover_the_catalogue():
    used, lengths = set(), []
    for chunk in range(N_CHUNKS):
        for _, _, steps, final, _ in _functions(chunk):
            used.update(s[0] for s in steps)
            lengths.append(len(steps) + (final is not None))
    assert used == set(NAMES), f"never drawn: {sorted(set(NAMES) - used)}"
    assert len(lengths) >= 100 and min(lengths) >= 2 and max(lengths) <= 5


# ---- (c) hvp: forward over reverse against reverse over reverse -------------------------------

@pytest.mark.parametrize("chunk", range(2))
def test_hvp_matches_reverse_over_reverse(chunk, no_leaks):
    rng = np.random.default_rng(777 + chunk)
    for k in range(16):
        x_shape, steps, final = _generate(rng, scalar=True)
        xv, vv = rng.normal(size=x_shape), rng.normal(size=x_shape)
        where = f"function {chunk}/{k}: x{x_shape} -> {[s[0] for s in steps]} -> {final}"

        def f(t):
            return _replay(t, steps, final, "ag")

        got = ag.hvp(f, ag.tensor(xv), ag.tensor(vv)).numpy()
        x = ag.tensor(xv, requires_grad=True)
        (g,) = ag.grad(f(x), x, create_graph=True)
        gv = (g * ag.tensor(vv)).sum()
        hv = ag.grad(gv, x, allow_unused=True)[0] if gv.requires_grad else None  # linear f: H = 0
        want = np.zeros(x_shape) if hv is None else hv.numpy()
        _close(got, want, f"{where}: hvp vs grad of grad")
        # the same product as the jvp of a vjp (reverse inside forward)
        _, tan = ag.jvp(lambda t: ag.vjp(f, t, 1.0)[1], ag.tensor(xv), ag.tensor(vv))
        _close(tan.numpy(), want, f"{where}: jvp of vjp")


# ---- values by hand, and the errors ------------------------------------------------------------

def test_small_cases_by_hand(no_leaks):
    x = ag.tensor([0.5, 1.0, 2.0])
    y, t = ag.jvp(lambda a: a * a * a, x, [1.0, -1.0, 0.5])
    np.testing.assert_array_equal(t.numpy(), [0.75, -3.0, 6.0])  # 3 x^2 t
    y, (ga, gb) = ag.vjp(lambda a, b: a * b, [x, ag.tensor([3.0, 4.0, 5.0])], [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(ga.numpy(), [3.0, 4.0, 10.0])
    np.testing.assert_array_equal(gb.numpy(), [0.5, 1.0, 4.0])
    a = np.array([[2.0, -1.0, 0.5], [0.75, 1.0, -2.5], [3.0, 0.25, -0.5]])
    h = ag.hessian(lambda v: (v * (ag.tensor(a) @ v)).sum(), x)  # x^T A x: A + A^T
    np.testing.assert_allclose(h.numpy(), a + a.T, rtol=1e-15)
    for mode in ("rev", "fwd"):
        j = ag.jacobian(lambda v: ag.tensor(a[:2]) @ v, x, mode=mode)  # J = A
        np.testing.assert_allclose(j.numpy(), a[:2], rtol=1e-15, err_msg=mode)
    j = ag.jacobian(lambda v: v * v, ag.tensor(1.5))
    assert j.shape == () and j.item() == 3.0


def test_an_exception_in_the_function_is_the_cause(no_leaks):
    x = ag.tensor([1.0, 2.0])

    def boom(t):
        raise KeyError("from f")

    calls = [lambda: ag.jvp(boom, x, x), lambda: ag.vjp(boom, x, x),
             lambda: ag.jacobian(boom, x), lambda: ag.jacobian(boom, x, mode="fwd"),
             lambda: ag.hvp(boom, x, x), lambda: ag.hessian(boom, x)]
    for call in calls:
        with pytest.raises(ag.CallbackError) as info:
            call()
        assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ag.CallbackError) as info:
        ag.jvp(lambda t: 3.0, x, x)
    assert isinstance(info.value.__cause__, TypeError)


def test_errors(no_leaks):
    x = ag.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ag.ShapeError, match="tangent 0 has shape"):
        ag.jvp(ag.sin, x, ag.ones(2))
    with pytest.raises(ag.DTypeError, match="tangent 0 is float32"):
        ag.jvp(ag.sin, x, ag.ones(3, dtype=ag.float32))
    with pytest.raises(ValueError, match="2 tangents for 1 primals"):
        ag.jvp(ag.sin, [x], [x, x])
    with pytest.raises(ag.ShapeError, match="the cotangent has shape"):
        ag.vjp(ag.sin, x, ag.ones(2))
    with pytest.raises(ag.ShapeError, match="must return one element"):
        ag.hvp(ag.sin, x, x)
    with pytest.raises(ag.ShapeError, match="must return one element"):
        ag.hessian(ag.exp, x)
    with pytest.raises(ag.ShapeError, match="v has shape"):
        ag.hvp(ag.sum, x, ag.ones(2))
    with pytest.raises(ValueError, match='mode must be "rev" or "fwd"'):
        ag.jacobian(ag.sin, x, mode="sideways")
    with pytest.raises(TypeError):
        ag.jvp(ag.sin, [1.0, 2.0], [1.0, 1.0])
    # forward mode inside forward mode: the inner call's StateError is the cause
    with pytest.raises(ag.CallbackError) as info:
        ag.jvp(lambda t: ag.jvp(ag.sin, t, t)[1], x, x)
    assert isinstance(info.value.__cause__, ag.StateError)
    assert "a forward-mode pass is already running" in str(info.value.__cause__)
    with pytest.raises(ag.CallbackError) as info:
        ag.hvp(lambda t: ag.jacobian(ag.sum, t).sum(), x, x)
    assert isinstance(info.value.__cause__, ag.StateError)
    # reverse inside reverse is fine: the Jacobian of a gradient is the Hessian
    h = ag.jacobian(lambda t: ag.vjp(lambda u: (u * u * u).sum(), t, 1.0)[1], x)
    np.testing.assert_allclose(h.numpy(), np.diag(6 * x.numpy()), rtol=1e-15)
