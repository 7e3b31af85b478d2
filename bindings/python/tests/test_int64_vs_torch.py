"""int64 and bool tensors, the index and mask ops, and the seeded generators (issue 18) against
PyTorch: values, gradients, errors. Random draws are checked for their laws with wide bounds
(the streams are seeded, so the tests never flake) and against the library's own contracts
(a Generator's first uniform equals rand(seed=...); get/set_state replays)."""

import pickle

import numpy as np
import pytest

import libautograd as ag

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(18)
NAN = float("nan")


def t64(x, requires_grad=False):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=requires_grad)


# ---- dtypes and NumPy ------------------------------------------------------------------------


def test_int64_and_bool_round_trip_numpy(no_leaks):
    big = np.array([2**62 + 1, -(2**62) - 3, 2**63 - 1, -(2**63)], dtype=np.int64)
    t = ag.tensor(big, dtype=ag.int64)
    assert t.dtype is ag.int64 and repr(ag.int64) == "libautograd.int64"
    out = t.numpy()
    assert out.dtype == np.int64 and (out == big).all()
    assert t.reshape(2, 2).numpy().tolist() == big.reshape(2, 2).tolist()
    m = ag.from_numpy(np.array([[True, False], [False, True]]), dtype="bool")
    assert m.dtype is ag.bool_ and str(ag.bool_) == "bool" and repr(ag.bool_) == "libautograd.bool_"
    assert m.numpy().dtype == np.bool_ and m.numpy().tolist() == [[True, False], [False, True]]
    assert ag.tensor([3, 4], dtype=np.int64).dtype is ag.int64
    assert ag.tensor([1, 0], dtype=bool).dtype is ag.bool_
    # Without a dtype, integer data still becomes float64 (as before).
    assert ag.tensor(np.array([1, 2])).dtype is ag.float64
    # Exact items, indices, pickles.
    assert ag.tensor(2**62 + 1, dtype=ag.int64).item() == 2**62 + 1
    assert ag.tensor(True, dtype=ag.bool_).item() is True
    assert [10, 20, 30][ag.tensor(2, dtype=ag.int64)] == 30
    with pytest.raises(TypeError):
        [10, 20][ag.tensor(1.0)]
    assert pickle.loads(pickle.dumps(ag.int64)) is ag.int64
    assert pickle.loads(pickle.dumps(ag.bool_)) is ag.bool_
    assert pickle.loads(pickle.dumps(t)).numpy().tolist() == big.tolist()
    # set_data into int64 leaves: ints as they are, floats truncated by the library.
    s = ag.zeros(3, dtype=ag.int64)
    s.set_data([7, -8, 2**40])
    assert s.numpy().tolist() == [7, -8, 2**40]
    s.set_data(np.array([1.9, -2.9, 0.0]))
    assert s.numpy().tolist() == [1, -2, 0]
    with pytest.raises(ag.ArgumentError):
        s.set_data(np.array([NAN, 0.0, 1.0]))


def test_sums_and_comparisons_match_torch():
    a = np.array([[1, 2, 3], [4, 5, 6]])
    t = ag.tensor(a, dtype=ag.int64)
    for axis in (None, 0, 1):
        want = torch.tensor(a).sum() if axis is None else torch.tensor(a).sum(axis)
        got = t.sum() if axis is None else t.sum(axis)
        assert got.dtype is ag.int64
        assert got.numpy().tolist() == want.tolist()
    # torch.tensor([2**63 - 1, 1]).sum() wraps
    wrapped = torch.tensor([2**63 - 1, 1]).sum().item()
    assert ag.tensor([2**63 - 1, 1], dtype=ag.int64).sum().item() == wrapped
    b = np.array([[True, False], [True, True]])
    assert ag.tensor(b, dtype=ag.bool_).sum().item() == torch.tensor(b).sum().item() == 3
    x, y = [2**62 + 1, 2**62, 5], [2**62, 2**62, 7]
    for op in ("__gt__", "__eq__", "__le__"):
        got = getattr(ag.tensor(x, dtype=ag.int64), op)(ag.tensor(y, dtype=ag.int64))
        assert got.dtype is ag.bool_
        assert got.numpy().tolist() == getattr(torch.tensor(x), op)(torch.tensor(y)).tolist()


def test_computing_ops_refuse_int64_and_bool(no_leaks):
    ints = ag.tensor([[1, 2], [3, 4]], dtype=ag.int64)
    masks = ag.tensor([[True, False], [False, True]], dtype=ag.bool_)
    for t in (ints, masks):
        for f in (ag.exp, lambda v: v + v, lambda v: v @ v, ag.mean, lambda v: ag.softmax(v, 1),
                  ag.tanh, lambda v: v * 2):
            with pytest.raises(ag.DTypeError):
                f(t)
        with pytest.raises(ag.DTypeError):
            t.requires_grad = True
        assert not t.requires_grad
        assert not t.is_floating_point


# ---- to ------------------------------------------------------------------------------------


def test_to_matches_torch():
    a = np.array([1.7, -1.7, 0.0, -0.5, 2.5, -2.9999, 1e15 + 0.5])
    assert ag.tensor(a).to(ag.int64).numpy().tolist() == torch.tensor(a).to(torch.int64).tolist()
    assert ag.to(ag.tensor(a, dtype=ag.float32), "int64").numpy().tolist() == \
        torch.tensor(a, dtype=torch.float32).to(torch.int64).tolist()
    z = np.array([0.0, -0.0, NAN, 0.1, np.inf])
    assert ag.tensor(z).to(ag.bool_).numpy().tolist() == torch.tensor(z).to(torch.bool).tolist()
    assert ag.tensor([True, False], dtype=ag.bool_).to(ag.float32).numpy().tolist() == [1.0, 0.0]
    for bad in (NAN, np.inf, -np.inf, 2.0**63, -1e19):
        with pytest.raises(ag.ArgumentError, match="no int64 value"):
            ag.tensor([0.0, bad]).to(ag.int64)
    with pytest.raises(TypeError):
        ag.tensor([1.0]).to(np.int32)
    # float64 -> float32 -> loss: the gradient comes back in float64, as torch's.
    x, xt = ag.tensor([1.5, -2.0, 0.25], requires_grad=True), t64([1.5, -2.0, 0.25], True)
    (x.to(ag.float32) ** 3).sum().backward()
    (xt.to(torch.float32) ** 3).sum().backward()
    assert x.grad.dtype is ag.float64
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7)


# ---- argmax, argmin, topk ----------------------------------------------------------------------


def test_argmax_argmin_match_torch():
    x = np.array([[1, 3, 3, -1], [NAN, 2, NAN, 5], [0, -2, -2, 7]])
    tx, ax = torch.tensor(x), ag.tensor(x)
    for axis in (0, 1, -1):
        for keepdim in (False, True):
            got = ag.argmax(ax, axis, keepdim)
            assert got.dtype is ag.int64
            assert got.numpy().tolist() == torch.argmax(tx, axis, keepdim).tolist()
            want = torch.argmin(tx, axis, keepdim).tolist()
            assert ag.argmin(ax, axis, keepdim).numpy().tolist() == want
    assert ag.argmax(ax).item() == torch.argmax(tx).item() == 4
    assert ag.argmin(ax, keepdim=True).shape == tuple(torch.argmin(tx, keepdim=True).shape)
    assert ag.argmax(ag.tensor(2.5), 0).shape == ()
    with pytest.raises(ag.ShapeError):
        ag.argmax(ag.zeros(2, 0), 1)
    with pytest.raises(ag.ArgumentError):
        ag.argmin(ax, 2)
    with pytest.raises(ag.DTypeError):
        ag.argmax(ag.tensor([1, 2], dtype=ag.int64), 0)


def test_topk_values_indices_and_gradient_match_torch():
    x = RNG.permutation(20).reshape(4, 5) * 0.5 - 3  # distinct values: torch's order is defined
    cases = ((2, 1, True), (3, 0, False), (5, -1, True), (0, 1, False), (4, 0, True))
    for k, axis, largest in cases:
        a, t = ag.tensor(x, requires_grad=True), t64(x, True)
        got, want = ag.topk(a, k, axis, largest), torch.topk(t, k, axis, largest)
        assert got.indices.dtype is ag.int64
        np.testing.assert_array_equal(got.values.numpy(), want.values.detach().numpy())
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        seed = RNG.uniform(0.5, 1.5, tuple(want.values.shape))
        if seed.size:
            got.values.backward(ag.tensor(seed))
            want.values.backward(torch.tensor(seed))
            np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())
    v = ag.tensor([3.0, 1.0, NAN, 3.0, -2.0, 5.0, 1.0])
    got = ag.topk(v, 3)
    want = torch.topk(torch.tensor(v.numpy()), 3).indices.tolist()
    assert got.indices.numpy().tolist() == want == [2, 5, 0]
    with pytest.raises(ag.ArgumentError):
        ag.topk(v, 8)
    with pytest.raises(ag.ShapeError):
        ag.topk(ag.tensor(1.0), 1, 0)


# ---- one_hot, embedding, masked_fill, logical ops ------------------------------------------------


def test_one_hot_matches_torch():
    idx = np.array([[0, 3], [1, 1]])
    assert ag.one_hot(idx).numpy().tolist() == F.one_hot(torch.tensor(idx)).tolist()
    got = ag.one_hot(ag.tensor(idx, dtype=ag.int64), 5, dtype=ag.float32)
    assert got.dtype is ag.float32
    assert got.numpy().tolist() == F.one_hot(torch.tensor(idx), 5).float().tolist()
    with pytest.raises(ag.ArgumentError):
        ag.one_hot([0, 5], 5)
    with pytest.raises(TypeError):
        ag.one_hot(ag.tensor([1.0]), 3)
    with pytest.raises(ag.DTypeError):
        ag.one_hot([1], 3, dtype=ag.bool_)


def test_embedding_values_and_gradient_match_torch(no_leaks):
    w = RNG.normal(size=(6, 3))
    idx = np.array([[0, 2, 2], [5, 2, 0]])  # repeated rows
    a, t = ag.tensor(w, requires_grad=True), t64(w, True)
    got, want = ag.embedding(idx, a), F.embedding(torch.tensor(idx), t)
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    seed = RNG.normal(size=want.shape)
    (got.tanh() * ag.tensor(seed)).sum().backward()
    (want.tanh() * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-13, atol=1e-15)
    assert ag.gradcheck(lambda v: ag.embedding(ag.tensor(idx, dtype=ag.int64), v).sin(),
                         ag.tensor(w, requires_grad=True)).passed
    # Forward mode: the tangent is the same pick of the weight's tangent.
    _, tangent = ag.jvp(lambda v: ag.embedding(idx, v), (ag.tensor(w),), (ag.tensor(w * 10),))
    np.testing.assert_array_equal(tangent.numpy(), w[idx] * 10)
    with pytest.raises(ag.ArgumentError):
        ag.embedding([6], a)
    with pytest.raises(TypeError):
        ag.embedding(ag.tensor([1.0]), a)
    with pytest.raises(ag.ShapeError):
        ag.embedding([0], ag.tensor([1.0, 2.0]))


def test_masked_fill_and_logical_ops_match_torch():
    x = RNG.normal(size=(2, 3))
    mask = np.array([[True, False, True]])
    a, t = ag.tensor(x, requires_grad=True), t64(x, True)
    got = ag.masked_fill(a, mask, -np.inf)
    want = t.masked_fill(torch.tensor(mask), -np.inf)
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    seed = np.array([[np.inf, 1.0, NAN], [-np.inf, 2.0, np.inf]])
    got.backward(ag.tensor(seed))
    want.backward(torch.tensor(seed))
    np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())  # 0 where filled
    with pytest.raises(ag.ShapeError):
        ag.masked_fill(a, [True, False], 0.0)
    with pytest.raises(ag.DTypeError):
        ag.masked_fill(ag.tensor([1, 2], dtype=ag.int64), [True, False], 0.0)
    p, q = np.array([[1], [0]]), np.array([3.0, 0.0, NAN])
    for name in ("logical_and", "logical_or"):
        got = getattr(ag, name)(ag.tensor(p, dtype=ag.int64), ag.tensor(q))
        assert got.dtype is ag.bool_
        want = getattr(torch, name)(torch.tensor(p), torch.tensor(q)).tolist()
        assert got.numpy().tolist() == want
    want = torch.logical_not(torch.tensor(q)).tolist()
    assert ag.logical_not(ag.tensor(q)).numpy().tolist() == want
    with pytest.raises(ag.ShapeError):
        ag.logical_and([True, False], [True, False, True])


def test_cross_entropy_with_an_int64_tensor_matches_torch():
    x = RNG.normal(size=(5, 4))
    labels = np.array([3, 0, 1, 1, 2])
    for dtype, tdt, rtol in ((ag.float64, torch.float64, 1e-13), (ag.float32, torch.float32, 2e-6)):
        a = ag.tensor(x, dtype=dtype, requires_grad=True)
        b = ag.tensor(x, dtype=dtype, requires_grad=True)
        t = torch.tensor(x, dtype=tdt, requires_grad=True)
        la = ag.cross_entropy(a, ag.tensor(labels, dtype=ag.int64))
        lb = ag.cross_entropy(b, labels.tolist())
        lt = F.cross_entropy(t, torch.tensor(labels))
        np.testing.assert_allclose(la.item(), lt.item(), rtol=rtol)
        assert la.item() == lb.item()
        la.backward(), lb.backward(), lt.backward()
        atol = 1e-7 if dtype is ag.float32 else 0
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)
        np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())
    with pytest.raises(ag.ArgumentError):
        ag.cross_entropy_labels(ag.tensor(x), [3, 0, 4, 1, 2])
    with pytest.raises(ag.ShapeError):
        ag.cross_entropy_labels(ag.tensor(x), [3, 0])
    with pytest.raises(TypeError):
        ag.cross_entropy(ag.tensor(x), ag.tensor(labels.astype(float)))


# ---- generators --------------------------------------------------------------------------------


def test_generator_seed_state_and_first_uniform(no_leaks):
    g = ag.Generator(42)
    first = ag.random_uniform((2, 3), -1, 2, generator=g)
    np.testing.assert_array_equal(first.numpy(), ag.rand(2, 3, low=-1, high=2, seed=42).numpy())
    twin = ag.random_uniform((2, 3), -1, 2, generator=ag.Generator(42))
    np.testing.assert_array_equal(first.numpy(), twin.numpy())
    second = ag.random_uniform((2, 3), -1, 2, generator=g)
    assert not np.array_equal(first.numpy(), second.numpy())
    state = g.get_state()

    def draw_all():
        return [ag.random_normal(4, 1, 2, generator=g, dtype=ag.float32).numpy(),
                ag.randint(0, 100, 5, generator=g).numpy(), ag.randperm(6, generator=g).numpy(),
                ag.dropout(ag.ones(8), 0.5, generator=g).numpy(),
                ag.multinomial(ag.tensor([1.0, 2.0]), 4, True, generator=g).numpy()]

    draws = draw_all()
    g.set_state(state)
    again = draw_all()
    for p, q in zip(draws, again):
        np.testing.assert_array_equal(p, q)
    g.manual_seed(42)
    restarted = ag.random_uniform((2, 3), -1, 2, generator=g)
    np.testing.assert_array_equal(restarted.numpy(), first.numpy())
    g.manual_seed(2**64 - 1)
    assert g.get_state() == 2**64 - 1
    with pytest.raises(ValueError):
        g.manual_seed(-1)
    with pytest.raises(TypeError):
        g.manual_seed(1.5)
    with pytest.raises(TypeError):
        ag.randperm(3, generator=42)
    with pytest.raises(ag.DTypeError):
        ag.random_uniform(2, generator=g, dtype=ag.int64)
    with pytest.raises(ag.ArgumentError):
        ag.random_normal(2, 0, -1, generator=g)
    n = ag.random_normal(20000, 1, 2, generator=g).numpy()
    assert abs(n.mean() - 1) < 0.14 and abs(n.std() - 2) < 0.1


def test_randint_randperm_dropout_multinomial_laws():
    g = ag.Generator(7)
    r = ag.randint(-3, 7, (100, 100), generator=g).numpy()
    assert r.dtype == np.int64 and r.min() >= -3 and r.max() < 7
    counts = np.bincount((r + 3).ravel(), minlength=10)
    assert ((counts - 1000) ** 2 / 1000).sum() < 60  # chi-square, 9 degrees of freedom
    with pytest.raises(ag.ArgumentError):
        ag.randint(3, 3, 2, generator=g)
    p = ag.randperm(50, generator=g).numpy()
    assert sorted(p.tolist()) == list(range(50)) and p.tolist() != list(range(50))
    with pytest.raises(ag.ArgumentError):
        ag.randperm(-1, generator=g)
    # dropout: torch's inverted-dropout law (zeros with probability p, the rest scaled by
    # 1/(1-p)), the gradient the same mask and scale; training=False and p=0 keep the values.
    x = ag.ones(100, 100, requires_grad=True)
    y = ag.dropout(x, 0.3, generator=g)
    v = y.numpy()
    assert abs((v == 0).mean() - 0.3) < 0.03
    assert set(np.unique(v).tolist()) <= {0.0, 1 / 0.7}
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), v)
    off = ag.dropout(ag.tensor([1.0, -2.0]), 0.9, training=False, generator=g)
    np.testing.assert_array_equal(off.numpy(), [1, -2])
    assert ag.dropout(ag.tensor([1.0, 2.0]), 1.0, generator=g).numpy().tolist() == [0, 0]
    with pytest.raises(ag.ArgumentError):
        ag.dropout(x, 1.5, generator=g)
    # multinomial: with replacement by the weights; without, distinct per row.
    s = ag.multinomial(ag.tensor([1.0, 0.0, 3.0]), 8000, replacement=True, generator=g).numpy()
    assert (s != 1).all() and abs((s == 0).mean() - 0.25) < 0.03
    rows = ag.multinomial(ag.tensor(np.tile([1.0, 1.0, 2.0], (2000, 1))), 3, generator=g).numpy()
    assert rows.shape == (2000, 3) and (np.sort(rows, axis=1) == [0, 1, 2]).all()
    assert abs((rows[:, 0] == 2).mean() - 0.5) < 0.05
    with pytest.raises(ag.ArgumentError):
        ag.multinomial(ag.tensor([1.0, 0.0, 3.0]), 3, generator=g)
    with pytest.raises(ag.ArgumentError):
        ag.multinomial(ag.tensor([1.0, -1.0]), 1, True, generator=g)
    with pytest.raises(ag.ShapeError):
        ag.multinomial(ag.ones(1, 1, 2), 1, True, generator=g)


# ---- compile --------------------------------------------------------------------------------


def test_compiled_step_reads_new_indices_and_redraws_dropout():
    w = ag.tensor(RNG.normal(size=(6, 4)), requires_grad=True)
    proj = ag.tensor(RNG.normal(size=(3, 4)), requires_grad=True)

    def step(idx, labels):
        loss = ag.cross_entropy(ag.embedding(idx, w).tanh() @ proj.T, labels)
        return (loss,) + tuple(ag.grad(loss, [w, proj]))

    f = ag.compile(step)
    for _ in range(3):
        idx = ag.tensor(RNG.integers(0, 6, 5), dtype=ag.int64)
        lab = ag.tensor(RNG.integers(0, 3, 5), dtype=ag.int64)
        for got, want in zip(f(idx, lab), step(idx, lab)):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    g, twin = ag.Generator(5), ag.Generator(5)
    h = ag.compile(lambda x: ag.dropout(x, 0.5, generator=g))
    x = ag.ones(32)
    outs = [h(x).numpy() for _ in range(3)]
    eager = [ag.dropout(x, 0.5, generator=twin).numpy() for _ in range(3)]
    for got, want in zip(outs, eager):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(outs[0], outs[1])
