"""Random expression graphs: values and gradients of every leaf, libautograd against JAX.

A seeded NumPy generator builds many graphs over three float64 leaves. Every intermediate has
one of the shapes (3, 4), (4,), (3, 1), (1, 4) or (), which all broadcast together, so unary,
binary (broadcasting), scalar, reduction, shape and neural-network operations can be mixed
freely. Each graph is recorded as a list of steps and then replayed twice: with libautograd
Tensors (backward) and with jax.numpy under jax.grad.
"""

import numpy as np
import pytest

import libautograd as ag

jax = pytest.importorskip("jax")
jnp = jax.numpy
jnn = jax.nn

SHAPES = [(3, 4), (4,), (3, 1), (1, 4), ()]
N_GRAPHS = 96  # JAX compiles each graph (~0.2 s here); libautograd takes ~1 ms


def _bshape(*shapes):
    return tuple(np.broadcast_shapes(*shapes))


# Each op: (arity, precondition on operand shapes, result shape, lib fn, jax fn), where the
# functions take (operands..., params) and params is drawn when the graph is generated.
def _ops():
    ops = {}

    def unary(name, lib, jx):
        ops[name] = (1, lambda s: True, lambda s, p: s[0], lib, jx)

    unary("sin", lambda x, p: x.sin(), lambda x, p: jnp.sin(x))
    unary("cos", lambda x, p: ag.cos(x), lambda x, p: jnp.cos(x))
    unary("tanh", lambda x, p: x.tanh(), lambda x, p: jnp.tanh(x))
    unary("sigmoid", lambda x, p: ag.sigmoid(x), lambda x, p: jnn.sigmoid(x))
    unary("softplus", lambda x, p: x.softplus(), lambda x, p: jnn.softplus(x))
    unary("gelu", lambda x, p: ag.gelu(x), lambda x, p: jnn.gelu(x, approximate=False))
    unary("neg", lambda x, p: -x, lambda x, p: -x)
    unary("relu", lambda x, p: ag.relu(x), lambda x, p: jnn.relu(x))
    unary("abs", lambda x, p: abs(x), lambda x, p: jnp.abs(x))
    unary("leaky", lambda x, p: x.leaky_relu(0.1), lambda x, p: jnn.leaky_relu(x, 0.1))
    unary("exp_tanh", lambda x, p: ag.exp(ag.tanh(x)), lambda x, p: jnp.exp(jnp.tanh(x)))
    unary("log_pos", lambda x, p: ag.log(ag.softplus(x) + 0.5),
          lambda x, p: jnp.log(jnn.softplus(x) + 0.5))
    unary("sqrt_pos", lambda x, p: ag.sqrt(x * x + 1.0), lambda x, p: jnp.sqrt(x * x + 1.0))
    unary("pow_scalar", lambda x, p: (ag.softplus(x) + 0.5) ** p["c"],
          lambda x, p: (jnn.softplus(x) + 0.5) ** p["c"])
    unary("square", lambda x, p: x ** 2, lambda x, p: x ** 2)
    unary("rpow", lambda x, p: p["c"] ** ag.tanh(x), lambda x, p: p["c"] ** jnp.tanh(x))
    unary("scale", lambda x, p: x * p["c"] + p["d"], lambda x, p: x * p["c"] + p["d"])
    unary("rscale", lambda x, p: p["c"] * x - p["d"], lambda x, p: p["c"] * x - p["d"])
    unary("rsub", lambda x, p: p["c"] - x, lambda x, p: p["c"] - x)
    unary("rdiv", lambda x, p: p["c"] / (x * x + 1.0), lambda x, p: p["c"] / (x * x + 1.0))
    unary("div_scalar", lambda x, p: x / p["c"], lambda x, p: x / p["c"])
    unary("max_scalar", lambda x, p: ag.maximum(x, p["d"]), lambda x, p: jnp.maximum(x, p["d"]))
    unary("log1p", lambda x, p: ag.log1p(x * x), lambda x, p: jnp.log1p(x * x))
    unary("expm1_tanh", lambda x, p: ag.tanh(x).expm1(), lambda x, p: jnp.expm1(jnp.tanh(x)))
    unary("erf", lambda x, p: x.erf(), lambda x, p: jax.scipy.special.erf(x))
    unary("clamp", lambda x, p: x.clamp(p["d"] - 0.5, p["d"] + 0.5),
          lambda x, p: jnp.clip(x, p["d"] - 0.5, p["d"] + 0.5))
    unary("clamp_min", lambda x, p: ag.clamp(x, min=p["d"]), lambda x, p: jnp.maximum(x, p["d"]))
    unary("min_scalar", lambda x, p: ag.minimum(p["d"], x), lambda x, p: jnp.minimum(p["d"], x))

    def binary(name, lib, jx):
        ops[name] = (2, lambda s: True, lambda s, p: _bshape(*s), lib, jx)

    binary("add", lambda a, b, p: a + b, lambda a, b, p: a + b)
    binary("sub", lambda a, b, p: a - b, lambda a, b, p: a - b)
    binary("mul", lambda a, b, p: a * b, lambda a, b, p: a * b)
    binary("div", lambda a, b, p: a / (b * b + 1.0), lambda a, b, p: a / (b * b + 1.0))
    binary("maximum", lambda a, b, p: ag.maximum(a, b), lambda a, b, p: jnp.maximum(a, b))
    binary("minimum", lambda a, b, p: a.minimum(b), lambda a, b, p: jnp.minimum(a, b))
    binary("pow", lambda a, b, p: (ag.softplus(a) + 0.5) ** ag.tanh(b),
           lambda a, b, p: (jnn.softplus(a) + 0.5) ** jnp.tanh(b))
    # b's operand is kept off 0 (atan2's gradient at (0, 0) is 0 here, nan in JAX)
    binary("atan2", lambda a, b, p: ag.atan2(a, ag.softplus(b) - 0.3),
           lambda a, b, p: jnp.arctan2(a, jnn.softplus(b) - 0.3))
    binary("where", lambda a, b, p: ag.where(a > b, a, b * 2.0),
           lambda a, b, p: jnp.where(a > b, a, b * 2.0))
    binary("where_le", lambda a, b, p: ag.where(a <= 0.0, b, a), lambda a, b, p:
           jnp.where(a <= 0.0, b, a))

    full = lambda s: s[0] == (3, 4)  # noqa: E731

    def reduction(name, lib, jx):
        def shape(s, p):
            if p["axis"] is None:
                return ()
            r = [3, 4]
            r[p["axis"]] = 1
            return tuple(r) if p["keep"] else (4,) if p["axis"] == 0 else None

        ops[name] = (1, full, shape, lib, jx)

    reduction("sum", lambda x, p: x.sum(p["axis"], p["keep"]),
              lambda x, p: jnp.sum(x, p["axis"], keepdims=p["keep"]))
    reduction("mean", lambda x, p: ag.mean(x, p["axis"], p["keep"]),
              lambda x, p: jnp.mean(x, p["axis"], keepdims=p["keep"]))
    reduction("max", lambda x, p: x.max(p["axis"], p["keep"]),
              lambda x, p: jnp.max(x, p["axis"], keepdims=p["keep"]))
    reduction("min", lambda x, p: ag.min(x, p["axis"], p["keep"]),
              lambda x, p: jnp.min(x, p["axis"], keepdims=p["keep"]))
    reduction("logsumexp", lambda x, p: x.logsumexp(p["axis"], p["keep"]),
              lambda x, p: jax.scipy.special.logsumexp(x, p["axis"], keepdims=p["keep"]))
    reduction("var", lambda x, p: x.var(p["axis"], p["corr"], p["keep"]),
              lambda x, p: jnp.var(x, p["axis"], ddof=p["corr"], keepdims=p["keep"]))

    def shaped(name, pre, lib, jx, out=lambda s, p: (3, 4), arity=1):
        ops[name] = (arity, pre, out, lib, jx)

    shaped("reshape_T", full, lambda x, p: x.reshape(4, 3).transpose(0, 1),
           lambda x, p: x.reshape(4, 3).T)
    shaped("permute_reshape", full, lambda x, p: x.reshape(2, 2, 3).permute(2, 0, 1).reshape(3, 4),
           lambda x, p: jnp.transpose(x.reshape(2, 2, 3), (2, 0, 1)).reshape(3, 4))
    shaped("roll_concat", full, lambda x, p: ag.concat([x[:, p["k"]:], x[:, :p["k"]]], axis=1),
           lambda x, p: jnp.concatenate([x[:, p["k"]:], x[:, :p["k"]]], axis=1))
    shaped("flip", full, lambda x, p: x[::-1], lambda x, p: x[::-1])
    shaped("index_select", full, lambda x, p: x.index_select(1, p["idx"]),
           lambda x, p: jnp.take(x, p["idx"], axis=1))
    shaped("gather", full, lambda x, p: ag.gather(x, 1, p["gidx"]),
           lambda x, p: jnp.take_along_axis(x, p["gidx"], axis=1))
    shaped("cumsum", full, lambda x, p: x.cumsum(p["ax"]), lambda x, p: jnp.cumsum(x, axis=p["ax"]))
    shaped("softmax", full, lambda x, p: x.softmax(p["ax"]),
           lambda x, p: jnn.softmax(x, axis=p["ax"]))
    shaped("log_softmax", full, lambda x, p: ag.log_softmax(x, p["ax"]),
           lambda x, p: jnn.log_softmax(x, axis=p["ax"]))
    shaped("expand_col", lambda s: s[0] == (3, 1), lambda x, p: x.expand(3, 4),
           lambda x, p: jnp.broadcast_to(x, (3, 4)))
    shaped("expand_row", lambda s: s[0] == (4,), lambda x, p: ag.expand(x, 3, -1),
           lambda x, p: jnp.broadcast_to(x, (3, 4)))
    shaped("unsqueeze", lambda s: s[0] == (4,), lambda x, p: x.unsqueeze(0),
           lambda x, p: x[None, :], out=lambda s, p: (1, 4))
    shaped("squeeze", lambda s: s[0] == (1, 4), lambda x, p: x.squeeze(0),
           lambda x, p: x[0], out=lambda s, p: (4,))
    shaped("stack_sum", lambda s: s[0] == s[1] == (3, 4),
           lambda a, b, p: (ag.stack([a, b]) * np.array([1.5, -0.5]).reshape(2, 1, 1)).sum(0),
           lambda a, b, p: jnp.sum(jnp.stack([a, b]) * np.array([1.5, -0.5]).reshape(2, 1, 1), 0),
           arity=2)
    shaped("matmul", lambda s: s[0] == s[1] == s[2] == (3, 4),
           lambda a, b, c, p: (a @ b.T) @ c / 4.0,
           lambda a, b, c, p: (a @ b.T) @ c / 4.0, arity=3)
    shaped("linear", lambda s: s[0] == (3, 4) and s[1] == s[2] == (4,),
           lambda x, u, v, p: ag.linear(x, ag.outer(u, v), u),
           lambda x, u, v, p: x @ jnp.outer(u, v).T + u, arity=3)
    shaped("dot", lambda s: s[0] == s[1] == (4,), lambda a, b, p: ag.dot(a, b),
           lambda a, b, p: jnp.dot(a, b), out=lambda s, p: (), arity=2)
    shaped("vecmat", lambda s: s[0] == (4,) and s[1] == (3, 4), lambda v, m, p: m @ v,
           lambda v, m, p: m @ v, out=lambda s, p: None, arity=2)  # (3,) is not kept
    return ops


OPS = _ops()
NAMES = sorted(OPS)


def _params(rng):
    return {
        "c": float(rng.choice([0.5, 1.5, 2.0, 3.0])),
        "d": float(rng.normal()),
        "axis": [None, 0, 1][rng.integers(3)],
        "keep": bool(rng.integers(2)),
        "corr": int(rng.integers(2)),
        "k": int(rng.integers(1, 4)),
        "ax": int(rng.choice([0, 1, -1])),
        "idx": rng.integers(0, 4, 4),
        "gidx": rng.integers(0, 4, (3, 4)),
        "labels": rng.integers(0, 4, 3),
    }


def _generate(rng):
    """A random graph: leaf shapes, a list of (op name, operand indices, params), and the
    final reduction."""
    leaf_shapes = [(3, 4)] + [SHAPES[rng.integers(len(SHAPES))] for _ in range(2)]
    shapes = list(leaf_shapes)
    steps = []
    target = int(rng.integers(6, 16))
    while len(steps) < target:
        name = NAMES[rng.integers(len(NAMES))]
        arity, pre, out_shape, _, _ = OPS[name]
        # prefer recent nodes so graphs get deep, but reuse old ones too (shared subgraphs)
        picks = [int(len(shapes) - 1 - min(rng.geometric(0.35) - 1, len(shapes) - 1))
                 for _ in range(arity)]
        operand_shapes = [shapes[i] for i in picks]
        if not pre(operand_shapes):
            continue
        params = _params(rng)
        shape = out_shape(operand_shapes, params)
        if shape is None:
            continue
        steps.append((name, picks, params))
        shapes.append(shape)
    final = ["sum", "mean", "mse", "cross_entropy"][rng.integers(4)]
    full_nodes = [i for i, s in enumerate(shapes) if s == (3, 4)]
    weights = rng.uniform(0.5, 1.5, len(shapes))
    return leaf_shapes, steps, shapes, final, full_nodes[-1], weights, _params(rng)


def _replay(leaves, steps, shapes, final, full_node, weights, fp, backend):
    """Evaluates the graph with backend "ag" (Tensors) or "jax" (jax arrays); returns the
    scalar objective."""
    nodes = list(leaves)
    for name, picks, params in steps:
        fn = OPS[name][3 if backend == "ag" else 4]
        nodes.append(fn(*[nodes[i] for i in picks], params))
    last = nodes[-1]
    if backend == "ag":
        total = last.sum() * weights[-1]
        if final == "mean":
            total = total + nodes[full_node].mean()
        elif final == "mse":
            total = total + ag.mse_loss(nodes[full_node], np.full((3, 4), 0.25))
        elif final == "cross_entropy":
            total = total + ag.cross_entropy(nodes[full_node], fp["labels"])
        for i, leaf in enumerate(leaves):  # every leaf takes part
            total = total + ag.tanh(leaf).sum() * weights[i]
        return total
    total = jnp.sum(last) * weights[-1]
    if final == "mean":
        total = total + jnp.mean(nodes[full_node])
    elif final == "mse":
        total = total + jnp.mean((nodes[full_node] - 0.25) ** 2)
    elif final == "cross_entropy":
        z = nodes[full_node]
        total = total - jnp.mean(jnn.log_softmax(z, axis=1)[jnp.arange(3), fp["labels"]])
    for i, leaf in enumerate(leaves):
        total = total + jnp.sum(jnp.tanh(leaf)) * weights[i]
    return total


@pytest.mark.parametrize("chunk", range(8))
def test_random_graphs_match_jax(chunk, no_leaks):
    rng = np.random.default_rng(1000 + chunk)
    used = set()
    for g in range(N_GRAPHS // 8):
        graph = _generate(rng)
        leaf_shapes, steps = graph[0], graph[1]
        used.update(name for name, _, _ in steps)
        data = [rng.normal(size=s) for s in leaf_shapes]

        leaves = [ag.from_numpy(d, requires_grad=True) for d in data]
        out = _replay(leaves, *graph[1:], backend="ag")
        out.backward()

        want, want_grads = jax.jit(jax.value_and_grad(
            lambda *xs: _replay(list(xs), *graph[1:], backend="jax"),
            argnums=(0, 1, 2)))(*[jnp.asarray(d) for d in data])

        where = f"graph {chunk}/{g}: {[s[0] for s in steps]}"
        assert out.shape == ()
        np.testing.assert_allclose(out.item(), float(want), rtol=1e-10, atol=1e-10, err_msg=where)
        for i, leaf in enumerate(leaves):
            np.testing.assert_allclose(leaf.grad.numpy(), np.asarray(want_grads[i]),
                                       rtol=1e-9, atol=1e-10, err_msg=f"{where}, leaf {i}")
        del leaves, out
    assert len(used) > 20  # the graphs really mix many kinds of operations
