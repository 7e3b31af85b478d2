"""The ops added in issue 15 (log1p, expm1, erf, clamp, atan2, cumsum) against PyTorch: float64
values and gradients, float32 values, PyTorch's conventions at the edges (and the two places we
differ from it on purpose), errors, and forward-mode tangents against torch.func.jvp."""

import numpy as np
import pytest

import libautograd as ag

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(15)

# name: (input arrays, libautograd function, torch function)
CASES = {
    "log1p": ([RNG.uniform(-0.9, 3.0, (3, 4))], ag.log1p, torch.log1p),
    "log1p_small": ([RNG.uniform(-1e-9, 1e-9, (5,))], lambda x: x.log1p(), torch.log1p),
    "expm1": ([RNG.normal(size=(3, 4)) * 3], ag.expm1, torch.expm1),
    "expm1_small": ([RNG.uniform(-1e-9, 1e-9, (5,))], lambda x: x.expm1(), torch.expm1),
    "erf": ([RNG.normal(size=(3, 4)) * 2], ag.erf, torch.erf),
    "clamp": ([RNG.normal(size=(3, 4))], lambda x: ag.clamp(x, -0.5, 0.7),
              lambda x: torch.clamp(x, -0.5, 0.7)),
    "clamp_min": ([RNG.normal(size=(3, 4))], lambda x: x.clamp(min=0.2), lambda x: x.clamp(min=0.2)),
    "clamp_max": ([RNG.normal(size=(3, 4))], lambda x: x.clamp(max=-0.1), lambda x: x.clamp(max=-0.1)),
    "atan2": ([RNG.normal(size=(3, 4)), RNG.normal(size=(4,))], ag.atan2, torch.atan2),
    "atan2_bcast": ([RNG.normal(size=(3, 1)), RNG.normal(size=(1, 4))], lambda a, b: a.atan2(b),
                    torch.atan2),
    "cumsum0": ([RNG.normal(size=(2, 3, 4))], lambda x: ag.cumsum(x, 0), lambda x: torch.cumsum(x, 0)),
    "cumsum1": ([RNG.normal(size=(2, 3, 4))], lambda x: x.cumsum(1), lambda x: torch.cumsum(x, 1)),
    "cumsum_neg": ([RNG.normal(size=(2, 3, 4))], lambda x: x.cumsum(-1), lambda x: torch.cumsum(x, -1)),
    "cumsum_0d": ([np.array(1.5)], lambda x: x.cumsum(0), lambda x: torch.cumsum(x, 0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_values_and_gradients_match_torch(name):
    data, lib_fn, torch_fn = CASES[name]
    leaves = [ag.tensor(d, requires_grad=True) for d in data]
    refs = [torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in data]
    out, want = lib_fn(*leaves), torch_fn(*refs)
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-14, atol=0)
    seed = RNG.uniform(0.5, 1.5, tuple(want.shape))
    out.backward(ag.tensor(seed))
    want.backward(torch.tensor(seed))
    for leaf, ref in zip(leaves, refs):
        np.testing.assert_allclose(leaf.grad.numpy(), ref.grad.numpy(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_values_match_torch(name):
    data, lib_fn, torch_fn = CASES[name]
    got = lib_fn(*[ag.tensor(d, dtype=ag.float32) for d in data]).numpy()
    want = torch_fn(*[torch.tensor(d, dtype=torch.float32) for d in data]).numpy()
    assert got.dtype == np.float32
    # Two ulps: glibc's and PyTorch's vectorised float32 functions may round differently.
    np.testing.assert_array_max_ulp(got, want, maxulp=2)


def test_cumsum_float32_is_bitwise_torch():
    """float32 cumsum sums in double and rounds each element once, as PyTorch's CPU kernel."""
    x = (RNG.normal(size=(7, 3000)) * 10 ** RNG.uniform(-3, 3, (7, 3000))).astype(np.float32)
    for axis in (1, 0, -1):
        got = ag.tensor(x).cumsum(axis).numpy()
        want = torch.cumsum(torch.tensor(x), axis).numpy()
        np.testing.assert_array_equal(got, want)
    # a float32 running sum would not be: the test can tell them apart
    assert not np.array_equal(np.cumsum(x, axis=1, dtype=np.float32), torch.cumsum(torch.tensor(x), 1).numpy())


def test_clamp_at_the_bounds_nan_and_inf_as_torch():
    x = np.array([-2.0, -1.0, 0.3, 1.0, 2.0, np.nan, -np.inf, np.inf])
    for lo, hi in [(-1.0, 1.0), (-1.0, None), (None, 1.0), (1.0, -1.0)]:
        a = ag.tensor(x, requires_grad=True)
        t = torch.tensor(x, requires_grad=True)
        y, ty = a.clamp(lo, hi), torch.clamp(t, lo, hi)
        np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
        y.sum().backward()
        ty.sum().backward()
        np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy(), err_msg=f"clamp({lo}, {hi})")
    with pytest.raises(ag.ArgumentError, match="nan"):
        ag.clamp(ag.tensor(x), float("nan"), 1.0)
    with pytest.raises(TypeError):
        ag.clamp(ag.tensor(x), "0")


def test_atan2_at_the_origin_and_signed_zeros_as_torch():
    a_vals = np.array([0.0, -0.0, 0.0, -0.0, 1.0])
    b_vals = np.array([0.0, 0.0, -0.0, -0.0, 0.0])
    a, b = ag.tensor(a_vals, requires_grad=True), ag.tensor(b_vals, requires_grad=True)
    ta = torch.tensor(a_vals, requires_grad=True)
    tb = torch.tensor(b_vals, requires_grad=True)
    y, ty = ag.atan2(a, b), torch.atan2(ta, tb)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(np.signbit(y.numpy()), np.signbit(ty.detach().numpy()))
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
    np.testing.assert_array_equal(b.grad.numpy(), tb.grad.numpy())


def test_atan2_gradient_where_torch_overflows():
    """torch forms a^2 + b^2, which overflows at 1e200 and underflows at 1e-200 (gradient 0
    there); ours is b/(a^2 + b^2) and -a/(a^2 + b^2), by hand: 4e-200/25e-400 = 1.6e199."""
    a, b = ag.tensor([1e200, 3e-200], requires_grad=True), ag.tensor([1e200, 4e-200], requires_grad=True)
    ag.atan2(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.5e-200, 1.6e199], rtol=1e-15)
    np.testing.assert_allclose(b.grad.numpy(), [-0.5e-200, -1.2e199], rtol=1e-15)


def test_expm1_gradient_is_exp_where_torch_cancels():
    """torch takes expm1' as y + 1, which is 0 at x = -40; ours is e^x."""
    x = ag.tensor([-40.0, -1.0, 2.0], requires_grad=True)
    x.expm1().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([-40.0, -1.0, 2.0]), rtol=1e-15)
    t = torch.tensor([-40.0], dtype=torch.float64, requires_grad=True)
    torch.expm1(t).sum().backward()
    assert t.grad.item() == 0.0  # the difference this test pins


def test_cumsum_errors():
    x = ag.tensor(np.ones((2, 3)))
    for axis in (2, -3, 2**63 - 1, -(2**63)):
        with pytest.raises(ag.ArgumentError, match="out of range"):
            x.cumsum(axis)
    with pytest.raises(ag.ArgumentError):
        ag.tensor(1.0).cumsum(1)


def _jvp():
    jvp = getattr(ag, "jvp", None)
    if jvp is None:
        pytest.skip("the Python binding has no jvp yet (forward mode is in the Swift API; the C "
                    "and Python forms are another part of issue 15)")
    return jvp


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_matches_torch_func_jvp(name):
    jvp = _jvp()
    data, lib_fn, torch_fn = CASES[name]
    tangents = [RNG.normal(size=np.shape(d)) for d in data]
    _, got = jvp(lib_fn, [ag.tensor(d) for d in data], [ag.tensor(t) for t in tangents])
    got = got[0] if isinstance(got, (list, tuple)) else got
    _, want = torch.func.jvp(torch_fn, tuple(torch.tensor(d) for d in data),
                             tuple(torch.tensor(t) for t in tangents))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-13, atol=0)
