"""layer_norm, batch_norm, group_norm, scaled_dot_product_attention, clip_grad_norm_ and the
warm-up + cosine schedule (libautograd.nn) against PyTorch in float64: values and gradients
on random shapes and options, running statistics, errors."""

import math

import numpy as np
import pytest

import libautograd as ag

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(18)


def _compare(lib_fn, torch_fn, arrays, rtol=1e-11, atol=1e-12):
    """Values of f(*arrays) and gradients for a random seed, against torch (float64)."""
    leaves = [None if a is None else ag.tensor(a, requires_grad=True) for a in arrays]
    refs = [None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, want = lib_fn(*leaves), torch_fn(*refs)
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=rtol, atol=atol)
    seed = RNG.uniform(-1.5, 1.5, tuple(want.shape))
    out.backward(ag.tensor(seed))
    want.backward(torch.tensor(seed))
    for k, (leaf, ref) in enumerate(zip(leaves, refs)):
        if leaf is None:
            continue
        np.testing.assert_allclose(leaf.grad.numpy(), ref.grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {k}")


def _maybe(shape, p=0.7):
    return RNG.normal(size=shape) if RNG.uniform() < p else None


@pytest.mark.parametrize("case", range(12))
def test_layer_norm(case):
    rank = int(RNG.integers(1, 5))
    shape = tuple(int(e) for e in RNG.integers(1, 5, rank))
    k = int(RNG.integers(1, rank + 1))
    norm = shape[rank - k:]
    eps = float(RNG.choice([1e-5, 1e-3, 0.1]))
    x, w, b = RNG.normal(size=shape) * 3 + 1, _maybe(norm), _maybe(norm)
    if math.prod(norm) == 1:
        x = x  # a single element normalises to 0: the gradient is still defined (0)
    _compare(lambda x, w, b: ag.layer_norm(x, norm, w, b, eps),
             lambda x, w, b: F.layer_norm(x, norm, w, b, eps), [x, w, b])


@pytest.mark.parametrize("case", range(12))
def test_batch_norm(case):
    rank = int(RNG.integers(2, 5))
    shape = [int(e) for e in RNG.integers(1, 4, rank)]
    shape[0] = int(RNG.integers(2, 5))
    shape = tuple(shape)
    c = shape[1]
    training = bool(case % 3)
    momentum, eps = float(RNG.uniform(0, 1)), float(RNG.choice([1e-5, 1e-2]))
    x, w, b = RNG.normal(size=shape), _maybe((c,)), _maybe((c,))
    rm0, rv0 = RNG.normal(size=c), RNG.uniform(0.5, 2, c)
    with_running = not training or case % 2 == 0
    rm, rv = (ag.tensor(rm0), ag.tensor(rv0)) if with_running else (None, None)
    trm, trv = (torch.tensor(rm0), torch.tensor(rv0)) if with_running else (None, None)
    _compare(lambda x, w, b: ag.batch_norm(x, rm, rv, w, b, training, momentum, eps),
             lambda x, w, b: F.batch_norm(x, trm, trv, w, b, training, momentum, eps), [x, w, b])
    if with_running:
        np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-13, atol=1e-15)
        if training:
            assert not np.array_equal(rm.numpy(), rm0), "the running mean was updated"


@pytest.mark.parametrize("case", range(8))
def test_group_norm(case):
    groups = int(RNG.integers(1, 4))
    c = groups * int(RNG.integers(1, 4))
    shape = (int(RNG.integers(1, 4)), c) + tuple(int(e) for e in RNG.integers(1, 4, int(RNG.integers(0, 3))))
    if math.prod(shape[2:]) * c // groups == 1:
        shape = shape + (2,)
    eps = float(RNG.choice([1e-5, 1e-2]))
    x, w, b = RNG.normal(size=shape) * 2, _maybe((c,)), _maybe((c,))
    _compare(lambda x, w, b: ag.group_norm(x, groups, w, b, eps),
             lambda x, w, b: F.group_norm(x, groups, w, b, eps), [x, w, b])


@pytest.mark.parametrize("case", range(16))
def test_scaled_dot_product_attention(case):
    batch = tuple(int(e) for e in RNG.integers(1, 4, int(RNG.integers(0, 3))))
    L, S, E, Ev = (int(e) for e in RNG.integers(1, 6, 4))
    causal = case % 4 == 1
    mask = None
    if case % 4 == 2:
        mask = RNG.normal(size=(L, S))
        mask[RNG.uniform(size=(L, S)) < 0.3] = -np.inf
        mask[:, 0] = 0.0  # keep one key per row (fully masked rows are tested below)
    elif case % 4 == 3:
        mask = RNG.normal(size=batch[-1:] + (1, S) if batch else (1, S))
    scale = None if case % 3 else float(RNG.uniform(0.1, 2))
    q, k, v = RNG.normal(size=batch + (L, E)), RNG.normal(size=batch + (S, E)), RNG.normal(size=batch + (S, Ev))
    _compare(lambda q, k, v, m: ag.scaled_dot_product_attention(q, k, v, m, causal, scale),
             lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal, scale=scale),
             [q, k, v, mask])


def test_attention_fully_masked_rows_give_zeros_as_torch():
    q, k, v = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 5, 4)), RNG.normal(size=(2, 5, 2))
    mask = RNG.normal(size=(3, 5))
    mask[1] = -np.inf
    _compare(lambda q, k, v, m: ag.scaled_dot_product_attention(q, k, v, m),
             lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), [q, k, v, mask])


def test_float32_values_match_torch():
    x = RNG.normal(size=(4, 3, 5)).astype(np.float32)
    got = ag.layer_norm(ag.tensor(x, dtype=ag.float32), 5).numpy()
    want = F.layer_norm(torch.tensor(x), (5,)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = ag.scaled_dot_product_attention(*(ag.tensor(x, dtype=ag.float32),) * 3, is_causal=True).numpy()
    want = F.scaled_dot_product_attention(*(torch.tensor(x),) * 3, is_causal=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm(norm_type, max_norm):
    shapes = [(3,), (2, 4), (5,)]
    grads = [RNG.normal(size=s) for s in shapes]
    params = [ag.zeros(s, requires_grad=True) for s in shapes]
    tparams = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, tp, g in zip(params[:2], tparams[:2], grads[:2]):  # the last one has no gradient
        (p * ag.tensor(g)).sum().backward()
        tp.grad = torch.tensor(g)
    total = ag.clip_grad_norm_(params, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type)
    assert total == pytest.approx(float(want), rel=1e-13)
    for p, tp in zip(params[:2], tparams[:2]):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-13)
    assert params[2].grad is None


def test_warmup_cosine_drives_an_optimizer():
    def ref(it, warmup, total, base, low):  # the GPT recipe
        if it < warmup:
            return base * (it + 1) / warmup
        if it >= total:
            return low
        return low + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (total - warmup))) * (base - low)

    p = ag.zeros(2, requires_grad=True)
    opt = ag.AdamW([p], lr=3e-3)
    sched = ag.WarmupCosineLR(opt, warmup_steps=5, total_steps=20, min_lr=3e-4)
    for it in range(25):
        assert opt.lr == pytest.approx(ref(it, 5, 20, 3e-3, 3e-4), rel=1e-14, abs=0)
        sched.step()
    assert ag.lr_warmup_cosine(7, 0, 10, 1.0) == pytest.approx(ref(7, 0, 10, 1.0, 0.0), rel=1e-15)


def test_errors():
    x = ag.tensor(RNG.normal(size=(2, 3, 4)))
    with pytest.raises(ag.ShapeError):
        ag.layer_norm(x, 4, ag.ones(3))
    with pytest.raises(ag.ArgumentError):
        ag.layer_norm(x, 4, eps=-1.0)
    with pytest.raises(ag.ArgumentError, match="more than 1 value per channel"):
        ag.batch_norm(ag.ones((1, 3)), None, None, training=True)
    with pytest.raises(ag.ArgumentError, match="running_mean and running_var"):
        ag.batch_norm(x, None, None, training=False)
    with pytest.raises(ag.StateError):
        ag.batch_norm(x, ag.zeros(3, requires_grad=True), ag.ones(3), training=True)
    with pytest.raises(ag.ArgumentError, match="divide"):
        ag.group_norm(x, 2)
    with pytest.raises(ag.ArgumentError, match="is_causal"):
        ag.scaled_dot_product_attention(x, x, x, ag.zeros((3, 3)), True)
    with pytest.raises(ag.ShapeError):
        ag.scaled_dot_product_attention(x, ag.ones((2, 3, 5)), x)
    with pytest.raises(ag.DTypeError):
        ag.scaled_dot_product_attention(x, x, ag.tensor(RNG.normal(size=(2, 3, 4)), dtype=ag.float32))
    with pytest.raises(ag.ArgumentError):
        ag.clip_grad_norm_([x], -1.0)
    with pytest.raises(ag.ArgumentError):
        ag.clip_grad_norm_([x], 1.0, norm_type=0)
    with pytest.raises(ag.ArgumentError):
        ag.lr_warmup_cosine(0, 10, 5, 1e-3)
    with pytest.raises(ag.ArgumentError):
        ag.lr_warmup_cosine(-1, 0, 5, 1e-3)
