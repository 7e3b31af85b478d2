"""Convolution and pooling (conv1d, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d)
against torch.nn.functional in float64: values and gradients over random shapes and
parameters, PyTorch's max-pool tie rule, float32 values, empty batches, tangents, errors."""

import numpy as np
import pytest

import libautograd as ag

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _conv2d_case(rng):
    groups = int(rng.choice([1, 1, 2, 3]))
    c, o = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    h = max(1, (kh - 1) * dh + 1 - 2 * ph) + int(rng.integers(0, 5))
    w = max(1, (kw - 1) * dw + 1 - 2 * pw) + int(rng.integers(0, 5))
    n = int(rng.integers(1, 4))
    x = rng.normal(size=(n, c, h, w))
    wt = rng.normal(size=(o, c // groups, kh, kw))
    b = rng.normal(size=(o,)) if rng.random() < 0.7 else None
    kwargs = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
    return x, wt, b, kwargs


def _compare(lib_fn, torch_fn, arrays, rng, rtol=1e-12):
    """Values and the gradients of every array (seeded with a random cotangent) agree."""
    leaves = [None if a is None else ag.tensor(a, requires_grad=True) for a in arrays]
    refs = [None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, want = lib_fn(*leaves), torch_fn(*refs)
    assert tuple(out.shape) == tuple(want.shape)
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=rtol, atol=1e-13)
    seed = rng.normal(size=tuple(want.shape))
    out.backward(ag.tensor(seed))
    want.backward(torch.tensor(seed))
    for leaf, ref in zip(leaves, refs):
        if leaf is not None:
            np.testing.assert_allclose(leaf.grad.numpy(), ref.grad.numpy(), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("seed", range(16))
def test_conv2d_random(seed):
    rng = np.random.default_rng(1800 + seed)
    x, wt, b, kw = _conv2d_case(rng)
    _compare(lambda x, w, b: ag.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw), [x, wt, b], rng)


def test_conv2d_padding_far_wider_than_the_input():
    """Large padding with large strides: unfold and fold then bound-check each tap instead of
    padding a scratch copy."""
    rng = np.random.default_rng(1840)
    kw = dict(stride=(40, 30), padding=(60, 50), dilation=(1, 2))
    arrays = [rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 3, 2)), rng.normal(size=(2,))]
    _compare(lambda x, w, b: ag.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw), arrays, rng)


@pytest.mark.parametrize("seed", range(6))
def test_conv1d_random(seed):
    rng = np.random.default_rng(1850 + seed)
    groups = int(rng.choice([1, 2]))
    c, o, k = 2 * groups, 3 * groups, int(rng.integers(1, 5))
    s, p, d = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
    length = max(1, (k - 1) * d + 1 - 2 * p) + int(rng.integers(0, 6))
    x, wt, b = rng.normal(size=(2, c, length)), rng.normal(size=(o, c // groups, k)), rng.normal(size=(o,))
    kw = dict(stride=s, padding=p, dilation=d, groups=groups)
    _compare(lambda x, w, b: ag.conv1d(x, w, b, **kw), lambda x, w, b: F.conv1d(x, w, b, **kw), [x, wt, b], rng)


def _pool_case(rng):
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = None if rng.random() < 0.4 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    h, w = kh + int(rng.integers(0, 6)), kw + int(rng.integers(0, 6))
    return (int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w), (kh, kw), stride, padding


@pytest.mark.parametrize("seed", range(10))
def test_max_pool2d_random(seed):
    rng = np.random.default_rng(1900 + seed)
    shape, k, s, p = _pool_case(rng)
    _compare(lambda x: ag.max_pool2d(x, k, s, p), lambda x: F.max_pool2d(x, k, s, p), [rng.normal(size=shape)], rng)


@pytest.mark.parametrize("seed", range(6))
def test_max_pool2d_ties_go_to_the_first_maximum(seed):
    """After a relu many windows hold only zeros (and small integers tie too): the gradient
    goes to the first maximum in scan order, as PyTorch's."""
    rng = np.random.default_rng(1950 + seed)
    shape, k, s, p = _pool_case(rng)
    x = np.maximum(rng.integers(-3, 3, size=shape), 0).astype(np.float64)
    _compare(lambda x: ag.max_pool2d(x, k, s, p), lambda x: F.max_pool2d(x, k, s, p), [x], rng)


@pytest.mark.parametrize("seed", range(8))
def test_avg_pool2d_random(seed):
    rng = np.random.default_rng(2000 + seed)
    shape, k, s, p = _pool_case(rng)
    include = bool(seed % 2)
    _compare(lambda x: ag.avg_pool2d(x, k, s, p, count_include_pad=include),
             lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=include), [rng.normal(size=shape)], rng)


@pytest.mark.parametrize("shape,size", [
    ((2, 3, 7, 5), (1, 1)), ((2, 3, 6, 4), (3, 2)), ((2, 3, 7, 5), (3, 2)), ((1, 2, 5, 7), (4, 6)),
    ((1, 2, 3, 4), (5, 7)), ((1, 1, 300, 5), (7, 3)), ((2, 2, 6, 6), 4),
])
def test_adaptive_avg_pool2d(shape, size):
    rng = np.random.default_rng(sum(shape))
    _compare(lambda x: ag.adaptive_avg_pool2d(x, size), lambda x: F.adaptive_avg_pool2d(x, size),
             [rng.normal(size=shape)], rng)


def test_float32_values():
    rng = np.random.default_rng(7)
    x, wt, b = rng.normal(size=(4, 6, 9, 9)), rng.normal(size=(8, 3, 3, 3)), rng.normal(size=(8,))
    f32 = lambda a: ag.tensor(a, dtype=ag.float32)
    t32 = lambda a: torch.tensor(a, dtype=torch.float32)
    got = ag.conv2d(f32(x), f32(wt), f32(b), padding=1, groups=2)
    want = F.conv2d(t32(x), t32(wt), t32(b), padding=1, groups=2)
    assert got.numpy().dtype == np.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ag.max_pool2d(f32(x), 3, 2, 1).numpy(), F.max_pool2d(t32(x), 3, 2, 1).numpy())
    # Window sums go through double here: equal to float32 round-off, not bitwise.
    np.testing.assert_allclose(ag.avg_pool2d(f32(x), 2).numpy(), F.avg_pool2d(t32(x), 2).numpy(), rtol=1e-6, atol=1e-6)


def test_empty_batches():
    w, b = ag.ones((3, 2, 3, 3), requires_grad=True), ag.zeros(3, requires_grad=True)
    x = ag.zeros((0, 2, 5, 5), requires_grad=True)
    y = ag.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 3, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((3, 2, 3, 3)))
    assert ag.max_pool2d(ag.zeros((0, 2, 4, 4)), 2).shape == (0, 2, 2, 2)
    assert ag.avg_pool2d(ag.zeros((2, 0, 4, 4)), 2).shape == (2, 0, 2, 2)
    assert ag.adaptive_avg_pool2d(ag.zeros((0, 2, 4, 4)), 3).shape == (0, 2, 3, 3)
    x = ag.ones((2, 2, 5, 5), requires_grad=True)
    y = ag.adaptive_avg_pool2d(x, (0, 3))  # torch gives this forward but refuses its backward
    assert y.shape == (2, 2, 0, 3)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 2, 5, 5)))
    assert ag.conv1d(ag.zeros((0, 2, 7)), ag.ones((4, 2, 3))).shape == (0, 4, 5)


def test_tangents_match_torch_func_jvp():
    rng = np.random.default_rng(11)
    x, wt, b, kw = _conv2d_case(rng)
    tx, tw, tb = rng.normal(size=x.shape), rng.normal(size=wt.shape), rng.normal(size=b.shape) if b is not None else None
    if b is None:
        b, tb = rng.normal(size=(wt.shape[0],)), rng.normal(size=(wt.shape[0],))

    def lib_f(x, w, b):
        return ag.max_pool2d(ag.conv2d(x, w, b, **kw).relu(), 1)

    def torch_f(x, w, b):
        return F.max_pool2d(F.conv2d(x, w, b, **kw).relu(), 1)

    _, got = ag.jvp(lib_f, (ag.tensor(x), ag.tensor(wt), ag.tensor(b)), (ag.tensor(tx), ag.tensor(tw), ag.tensor(tb)))
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    _, want = torch.func.jvp(torch_f, (t(x), t(wt), t(b)), (t(tx), t(tw), t(tb)))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call,error", [
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 3)),), ag.ShapeError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 1, 3, 3))), ag.ShapeError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 5, 5))), ag.ShapeError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 3, 3)), stride=0), ag.ArgumentError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 3, 3)), padding=-1), ag.ArgumentError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 1, 3, 3)), groups=2), ag.ShapeError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 3, 3)), ag.zeros(4)), ag.ShapeError),
    (lambda: ag.conv2d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 3, 3), dtype=ag.float32)), ag.DTypeError),
    (lambda: ag.conv1d(ag.zeros((1, 2, 4, 4)), ag.zeros((3, 2, 3))), ag.ShapeError),
    (lambda: ag.max_pool2d(ag.zeros((1, 2, 4, 4)), 3, padding=2), ag.ArgumentError),
    (lambda: ag.max_pool2d(ag.zeros((1, 2, 4)), 2), ag.ShapeError),
    (lambda: ag.max_pool2d(ag.zeros((1, 2, 0, 4)), 2), ag.ShapeError),
    (lambda: ag.avg_pool2d(ag.zeros((1, 2, 4, 4)), 0), ag.ArgumentError),
    (lambda: ag.adaptive_avg_pool2d(ag.zeros((1, 2, 4, 4)), (-1, 2)), ag.ArgumentError),
])
def test_errors(call, error):
    with pytest.raises(error):
        call()
