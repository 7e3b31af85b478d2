"""Every operation of the catalogue, float64 and float32: values and gradients against JAX.

For each case the inputs are random (seeded), the libautograd result r is reduced to
sum(r * w) with fixed random weights w, and both the value of r and the gradient of that sum
with respect to every input are compared with jax.grad of the same expression.
"""

import zlib

import numpy as np
import pytest

import libautograd as ag

jax = pytest.importorskip("jax")
jnp = jax.numpy
jnn = jax.nn

# Input domains: "any" normal values, "pos" in [0.5, 2], "away" |x| in [0.2, 2] (kinks at 0),
# "int" small integers (for comparisons with ties).
def _draw(rng, shape, domain):
    if domain == "pos":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "away":
        return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    if domain == "int":
        return rng.integers(-2, 3, shape).astype(np.float64)
    return rng.normal(size=shape)


IDX = np.array([2, 0, 2, 1])
GATHER_IDX = np.array([[0, 3, 3, 1], [2, 2, 0, 1], [1, 0, 3, 3]])
LABELS = np.array([3, 0, 2])


def _ce_jax(z, labels):
    return -jnp.mean(jnn.log_softmax(z, axis=1)[jnp.arange(z.shape[0]), labels])


# name: (input shapes and domains, libautograd function, JAX function)
CASES = {
    # unary
    "neg": ([((3, 4), "any")], lambda x: -x, lambda x: -x),
    "exp": ([((3, 4), "any")], ag.exp, jnp.exp),
    "log": ([((3, 4), "pos")], ag.log, jnp.log),
    "relu": ([((3, 4), "away")], ag.relu, jnn.relu),
    "sqrt": ([((3, 4), "pos")], ag.sqrt, jnp.sqrt),
    "abs": ([((3, 4), "away")], ag.abs, jnp.abs),
    "abs_op": ([((3, 4), "away")], lambda x: abs(x), jnp.abs),
    "sin": ([((3, 4), "any")], ag.sin, jnp.sin),
    "cos": ([((3, 4), "any")], ag.cos, jnp.cos),
    "tanh": ([((3, 4), "any")], ag.tanh, jnp.tanh),
    "sigmoid": ([((3, 4), "any")], ag.sigmoid, jnn.sigmoid),
    "gelu": ([((3, 4), "any")], ag.gelu, lambda x: jnn.gelu(x, approximate=False)),
    "softplus": ([((3, 4), "any")], ag.softplus, jnn.softplus),
    "leaky_relu": ([((3, 4), "away")], lambda x: ag.leaky_relu(x, 0.2),
                   lambda x: jnn.leaky_relu(x, 0.2)),
    "log1p": ([((3, 4), "pos")], ag.log1p, jnp.log1p),
    "log1p_method": ([((3, 4), "away")], lambda x: (x * 0.4).log1p(), lambda x: jnp.log1p(x * 0.4)),
    "expm1": ([((3, 4), "any")], ag.expm1, jnp.expm1),
    "erf": ([((3, 4), "any")], ag.erf, jax.scipy.special.erf),
    "clamp": ([((3, 4), "any")], lambda x: ag.clamp(x, -0.5, 0.8), lambda x: jnp.clip(x, -0.5, 0.8)),
    "clamp_min": ([((3, 4), "any")], lambda x: x.clamp(min=0.1), lambda x: jnp.maximum(x, 0.1)),
    "clamp_max": ([((3, 4), "any")], lambda x: x.clamp(max=-0.3), lambda x: jnp.minimum(x, -0.3)),
    # binary, broadcasting
    "add": ([((3, 4), "any"), ((4,), "any")], lambda a, b: a + b, lambda a, b: a + b),
    "sub": ([((3, 1), "any"), ((1, 4), "any")], lambda a, b: a - b, lambda a, b: a - b),
    "mul": ([((2, 3, 4), "any"), ((3, 1), "any")], lambda a, b: a * b, lambda a, b: a * b),
    "div": ([((3, 4), "any"), ((4,), "pos")], lambda a, b: a / b, lambda a, b: a / b),
    "pow": ([((3, 4), "pos"), ((3, 4), "any")], lambda a, b: a ** b, lambda a, b: a ** b),
    "pow_fn": ([((3, 4), "pos"), ((), "any")], ag.pow, jnp.power),
    "maximum": ([((3, 4), "any"), ((4,), "any")], ag.maximum, jnp.maximum),
    "minimum": ([((3, 4), "any"), ((3, 1), "any")], ag.minimum, jnp.minimum),
    "atan2": ([((3, 4), "any"), ((4,), "any")], ag.atan2, jnp.arctan2),
    "atan2_method": ([((3, 1), "any"), ((1, 4), "any")], lambda a, b: a.atan2(b), jnp.arctan2),
    "atan2_scalar": ([((3, 4), "any")], lambda x: ag.atan2(x, -0.7), lambda x: jnp.arctan2(x, -0.7)),
    "add_fn": ([((3, 4), "any"), ((), "any")], ag.add, jnp.add),
    "sub_fn": ([((3, 4), "any"), ((4,), "any")], ag.sub, jnp.subtract),
    "mul_fn": ([((3, 4), "any"), ((4,), "any")], ag.mul, jnp.multiply),
    "div_fn": ([((3, 4), "any"), ((3, 4), "pos")], ag.div, jnp.divide),
    # scalar forms, scalar on either side
    "add_scalar": ([((3, 4), "any")], lambda x: x + 2.5, lambda x: x + 2.5),
    "radd_scalar": ([((3, 4), "any")], lambda x: 2.5 + x, lambda x: 2.5 + x),
    "sub_scalar": ([((3, 4), "any")], lambda x: x - 1.25, lambda x: x - 1.25),
    "rsub_scalar": ([((3, 4), "any")], lambda x: 1.25 - x, lambda x: 1.25 - x),
    "mul_scalar": ([((3, 4), "any")], lambda x: x * -3.0, lambda x: x * -3.0),
    "rmul_scalar": ([((3, 4), "any")], lambda x: -3.0 * x, lambda x: -3.0 * x),
    "div_scalar": ([((3, 4), "any")], lambda x: x / 0.75, lambda x: x / 0.75),
    "rdiv_scalar": ([((3, 4), "pos")], lambda x: 0.75 / x, lambda x: 0.75 / x),
    "pow_scalar": ([((3, 4), "any")], lambda x: x ** 3, lambda x: x ** 3),
    "pow_scalar_frac": ([((3, 4), "pos")], lambda x: x ** 1.5, lambda x: x ** 1.5),
    "rpow_scalar": ([((3, 4), "any")], lambda x: 1.7 ** x, lambda x: 1.7 ** x),
    "int_scalars": ([((3, 4), "any")], lambda x: 2 * x - 1, lambda x: 2 * x - 1),
    "maximum_scalar": ([((3, 4), "any")], lambda x: ag.maximum(x, 0.3),
                       lambda x: jnp.maximum(x, 0.3)),
    "rmaximum_scalar": ([((3, 4), "any")], lambda x: ag.maximum(0.3, x),
                        lambda x: jnp.maximum(0.3, x)),
    "minimum_scalar": ([((3, 4), "any")], lambda x: ag.minimum(x, -0.2),
                       lambda x: jnp.minimum(x, -0.2)),
    "rminimum_scalar": ([((3, 4), "any")], lambda x: ag.minimum(-0.2, x),
                        lambda x: jnp.minimum(-0.2, x)),
    # linear algebra
    "matmul": ([((3, 4), "any"), ((4, 2), "any")], lambda a, b: a @ b, lambda a, b: a @ b),
    "matmul_fn": ([((3, 4), "any"), ((4, 2), "any")], ag.matmul, jnp.matmul),
    "matmul_batched": ([((2, 3, 4), "any"), ((4, 5), "any")], lambda a, b: a @ b,
                       lambda a, b: a @ b),
    "matmul_bcast_batch": ([((2, 1, 3, 4), "any"), ((3, 4, 2), "any")], lambda a, b: a @ b,
                           lambda a, b: a @ b),
    "matmul_vec_vec": ([((4,), "any"), ((4,), "any")], lambda a, b: a @ b, lambda a, b: a @ b),
    "matmul_vec_mat": ([((4,), "any"), ((4, 3), "any")], lambda a, b: a @ b, lambda a, b: a @ b),
    "matmul_mat_vec": ([((3, 4), "any"), ((4,), "any")], lambda a, b: a @ b, lambda a, b: a @ b),
    "dot": ([((5,), "any"), ((5,), "any")], ag.dot, jnp.dot),
    "outer": ([((3,), "any"), ((4,), "any")], ag.outer, jnp.outer),
    # reductions
    "sum_all": ([((3, 4), "any")], lambda x: x.sum(), jnp.sum),
    "sum_axis": ([((2, 3, 4), "any")], lambda x: x.sum(axis=1), lambda x: jnp.sum(x, axis=1)),
    "sum_axes_keep": ([((2, 3, 4), "any")], lambda x: ag.sum(x, axis=(0, -1), keepdim=True),
                      lambda x: jnp.sum(x, axis=(0, 2), keepdims=True)),
    "mean_all": ([((3, 4), "any")], ag.mean, jnp.mean),
    "mean_axis_keep": ([((3, 4), "any")], lambda x: x.mean(axis=0, keepdim=True),
                       lambda x: jnp.mean(x, axis=0, keepdims=True)),
    "max_all": ([((3, 4), "any")], ag.max, jnp.max),
    "max_axis": ([((3, 4), "any")], lambda x: x.max(axis=1), lambda x: jnp.max(x, axis=1)),
    "min_axis_keep": ([((3, 4), "any")], lambda x: ag.min(x, axis=0, keepdim=True),
                      lambda x: jnp.min(x, axis=0, keepdims=True)),
    "var_sample": ([((3, 4), "any")], lambda x: x.var(axis=1),
                   lambda x: jnp.var(x, axis=1, ddof=1)),
    "var_population_all": ([((3, 4), "any")], lambda x: ag.var(x, correction=0),
                           lambda x: jnp.var(x)),
    "logsumexp": ([((3, 4), "any")], lambda x: x.logsumexp(axis=1),
                  lambda x: jax.scipy.special.logsumexp(x, axis=1)),
    "logsumexp_all": ([((3, 4), "any")], ag.logsumexp, jax.scipy.special.logsumexp),
    "cumsum": ([((2, 3, 4), "any")], lambda x: ag.cumsum(x, 1), lambda x: jnp.cumsum(x, axis=1)),
    "cumsum_last": ([((3, 4), "any")], lambda x: x.cumsum(-1), lambda x: jnp.cumsum(x, axis=-1)),
    "cumsum_first": ([((3, 4), "any")], lambda x: x.cumsum(axis=-2), lambda x: jnp.cumsum(x, axis=0)),
    # shape operations
    "reshape": ([((3, 4), "any")], lambda x: x.reshape(2, -1, 3) * np.arange(6.0).reshape(2, 1, 3),
                lambda x: x.reshape(2, -1, 3) * np.arange(6.0).reshape(2, 1, 3)),
    "reshape_fn_tuple": ([((3, 4), "any")], lambda x: ag.reshape(x, (4, 3)),
                         lambda x: x.reshape(4, 3)),
    "transpose": ([((2, 3, 4), "any")], lambda x: x.transpose(0, 2),
                  lambda x: jnp.swapaxes(x, 0, 2)),
    "T": ([((3, 4), "any")], lambda x: x.T, lambda x: x.T),
    "permute": ([((2, 3, 4), "any")], lambda x: x.permute(2, 0, 1),
                lambda x: jnp.transpose(x, (2, 0, 1))),
    "expand": ([((3, 1), "any")], lambda x: x.expand(2, 3, 4),
               lambda x: jnp.broadcast_to(x, (2, 3, 4))),
    "expand_keep": ([((3, 1), "any")], lambda x: ag.expand(x, (-1, 5)),
                    lambda x: jnp.broadcast_to(x, (3, 5))),
    "squeeze_all": ([((3, 1, 4, 1), "any")], lambda x: x.squeeze(), jnp.squeeze),
    "squeeze_axis": ([((3, 1, 4, 1), "any")], lambda x: x.squeeze(-1),
                     lambda x: jnp.squeeze(x, -1)),
    "unsqueeze": ([((3, 4), "any")], lambda x: x.unsqueeze(1), lambda x: x[:, None, :]),
    "concat": ([((2, 4), "any"), ((3, 4), "any")], lambda a, b: ag.concat([a, b, a]),
               lambda a, b: jnp.concatenate([a, b, a])),
    "concat_axis1": ([((3, 2), "any"), ((3, 4), "any")], lambda a, b: ag.cat((b, a), axis=-1),
                     lambda a, b: jnp.concatenate([b, a], axis=-1)),
    "stack": ([((3, 4), "any"), ((3, 4), "any")], lambda a, b: ag.stack([a, b, a], axis=1),
              lambda a, b: jnp.stack([a, b, a], axis=1)),
    "slice": ([((5, 6), "any")], lambda x: ag.slice(x, 1, 1, None, 2),
              lambda x: x[:, 1::2]),
    "slice_negative": ([((5, 6), "any")], lambda x: x.slice(0, -4, -1),
                       lambda x: x[-4:-1]),
    "getitem_int": ([((3, 4), "any")], lambda x: x[1], lambda x: x[1]),
    "getitem_negative_int": ([((3, 4), "any")], lambda x: x[-1, 2], lambda x: x[-1, 2]),
    "getitem_slices": ([((4, 5, 6), "any")], lambda x: x[1:, ::2, -3:],
                       lambda x: x[1:, ::2, -3:]),
    "getitem_reverse": ([((4, 5), "any")], lambda x: x[::-1, 4:0:-2],
                        lambda x: x[::-1, 4:0:-2]),
    "getitem_none_ellipsis": ([((2, 3, 4), "any")], lambda x: x[..., None, 1],
                              lambda x: x[..., None, 1]),
    "getitem_list": ([((4, 3), "any")], lambda x: x[[3, 0, 0]], lambda x: x[np.array([3, 0, 0])]),
    "index_select": ([((3, 4), "any")], lambda x: ag.index_select(x, 1, IDX),
                     lambda x: jnp.take(x, IDX, axis=1)),
    "gather": ([((3, 4), "any")], lambda x: ag.gather(x, 1, GATHER_IDX),
               lambda x: jnp.take_along_axis(x, GATHER_IDX, axis=1)),
    "gather_axis0": ([((3, 4), "any")], lambda x: x.gather(0, GATHER_IDX[:2] % 3),
                     lambda x: jnp.take_along_axis(x, GATHER_IDX[:2] % 3, axis=0)),
    # neural-network functions
    "softmax": ([((3, 4), "any")], ag.softmax, lambda x: jnn.softmax(x, axis=-1)),
    "softmax_axis0": ([((3, 4), "any")], lambda x: x.softmax(0), lambda x: jnn.softmax(x, axis=0)),
    "log_softmax": ([((3, 4), "any")], ag.log_softmax, lambda x: jnn.log_softmax(x, axis=-1)),
    "cross_entropy": ([((3, 4), "any")], lambda z: ag.cross_entropy(z, LABELS),
                      lambda z: _ce_jax(z, LABELS)),
    "mse_loss": ([((3, 4), "any"), ((3, 4), "any")], ag.mse_loss,
                 lambda a, b: jnp.mean((a - b) ** 2)),
    "linear": ([((5, 4), "any"), ((3, 4), "any"), ((3,), "any")], ag.linear,
               lambda x, w, b: x @ w.T + b),
    "linear_no_bias": ([((2, 5, 4), "any"), ((3, 4), "any")], ag.linear, lambda x, w: x @ w.T),
    "where": ([((3, 4), "any"), ((3, 4), "any"), ((4,), "any")],
              lambda c, a, b: ag.where(c > 0, a, b),
              lambda c, a, b: jnp.where(c > 0, a, b)),
    "where_scalar": ([((3, 4), "any"), ((3, 4), "any")], lambda c, a: ag.where(c < 0.1, a, -1.0),
                     lambda c, a: jnp.where(c < 0.1, a, -1.0)),
}

COMPARISONS = {
    "eq": (lambda a, b: a == b, lambda a, b: a == b),
    "ne": (lambda a, b: a != b, lambda a, b: a != b),
    "lt": (lambda a, b: a < b, lambda a, b: a < b),
    "le": (lambda a, b: a <= b, lambda a, b: a <= b),
    "gt": (lambda a, b: a > b, lambda a, b: a > b),
    "ge": (lambda a, b: a >= b, lambda a, b: a >= b),
    "eq_fn": (ag.eq, lambda a, b: a == b),
    "ne_fn": (ag.ne, lambda a, b: a != b),
    "lt_fn": (ag.lt, lambda a, b: a < b),
    "le_fn": (ag.le, lambda a, b: a <= b),
    "gt_fn": (ag.gt, lambda a, b: a > b),
    "ge_fn": (ag.ge, lambda a, b: a >= b),
}

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_value_and_grad(name, dtype):
    specs, lib_fn, jax_fn = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    # The inputs are rounded to dtype first, so both sides see exactly the same numbers; JAX
    # then works in float64, the reference.
    data = [_draw(rng, shape, domain).astype(dtype) for shape, domain in specs]
    leaves = [ag.tensor(d, requires_grad=True) for d in data]
    assert all(t.dtype.numpy == np.dtype(dtype) for t in leaves)

    out = lib_fn(*leaves)
    want = np.asarray(jax_fn(*[jnp.asarray(d, dtype=jnp.float64) for d in data]))
    got = out.numpy()
    assert got.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL[dtype])

    weights = rng.uniform(0.5, 1.5, want.shape)
    (out * ag.tensor(weights, dtype=dtype)).sum().backward()

    def objective(*xs):
        return jnp.sum(jax_fn(*xs) * weights)

    want_grads = jax.grad(objective, argnums=tuple(range(len(data))))(
        *[jnp.asarray(d, dtype=jnp.float64) for d in data])
    for i, (leaf, want_g) in enumerate(zip(leaves, want_grads)):
        g = leaf.grad
        if g is None:  # nothing flowed back (where's condition): JAX must agree it is zero
            assert not np.any(np.asarray(want_g)), f"no gradient reached input {i}"
            continue
        assert g.dtype == leaf.dtype
        np.testing.assert_allclose(g.numpy(), np.asarray(want_g), **TOL[dtype],
                                   err_msg=f"gradient of input {i}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparison(name, dtype):
    lib_fn, ref = COMPARISONS[name]
    rng = np.random.default_rng(7)
    a = rng.integers(-2, 3, (3, 4)).astype(dtype)
    b = rng.integers(-2, 3, (4,)).astype(dtype)  # broadcast, with ties
    x = ag.tensor(a, requires_grad=True)
    r = lib_fn(x, ag.tensor(b))
    assert r.dtype == x.dtype
    assert not r.requires_grad  # comparisons carry no gradient
    np.testing.assert_array_equal(r.numpy(), ref(a, b).astype(dtype))
    # a Python number on either side
    np.testing.assert_array_equal(lib_fn(x, 1).numpy(), ref(a, 1).astype(dtype))
    np.testing.assert_array_equal(lib_fn(1.0, x).numpy(), ref(1.0, a).astype(dtype))
