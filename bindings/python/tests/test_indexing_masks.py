"""Indexing (issue 14, item 19): boolean masks select as in NumPy, with the gradient flowing
back to the selected elements; float indices are refused; every other index form (ints,
negative ints, slices with steps, None, Ellipsis, integer lists and arrays, several of them in
one key) gives NumPy's values and NumPy's placement of the result axes.

References: NumPy indexing of the same array for values; for gradients, the flat positions
NumPy selects (np.arange(n).reshape(shape)[key]) with the upstream weights summed into them
by np.bincount (repeated positions accumulate)."""

import numpy as np
import pytest

import libautograd as ag


def numpy_grad(shape, key, upstream):
    """d(sum(x[key] * upstream))/dx computed from NumPy's own indexing of positions."""
    size = int(np.prod(shape))
    positions = np.arange(size).reshape(shape)[key]
    return np.bincount(np.ravel(positions), weights=np.ravel(upstream),
                       minlength=size).reshape(shape)


def check_key(a, key, tensor_key=None, dtype=ag.float64):
    """x[key] matches a[key] in values and shape, and its gradient matches NumPy's."""
    x = ag.tensor(a, dtype=dtype, requires_grad=True)
    want = a[key]
    got = x[key if tensor_key is None else tensor_key]
    assert got.shape == want.shape, (key, got.shape, want.shape)
    np.testing.assert_array_equal(got.numpy(), want.astype(dtype.numpy))
    upstream = np.arange(1.0, want.size + 1).reshape(want.shape)
    (got * ag.tensor(upstream, dtype=dtype)).sum().backward()
    grad = x.grad
    want_grad = numpy_grad(a.shape, key, upstream)
    got_grad = np.zeros(a.shape) if grad is None else grad.numpy()
    np.testing.assert_array_equal(got_grad, want_grad)


# ---- the reported cases ------------------------------------------------------------------------


def test_comparison_result_is_a_mask():
    a = np.array([10.0, 20.0, 30.0])
    x = ag.tensor(a, requires_grad=True)
    y = x[x > 15]
    np.testing.assert_array_equal(y.numpy(), a[a > 15])  # [20, 30], not [10, 20, 20]
    (y * ag.tensor([1.0, 2.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 2.0])


def test_numpy_bool_array_and_bool_list_are_masks():
    a = np.array([10.0, 20.0, 30.0])
    check_key(a, np.array([False, True, True]))
    check_key(a, [True, False, True])
    check_key(a, np.array([False, False, False]))  # selects nothing: shape (0,)


@pytest.mark.parametrize("dtype", [ag.float32, ag.float64])
def test_masks_over_several_axes_and_leading_axes(dtype):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 4, 2))
    check_key(a, a > 0, dtype=dtype)  # a full-shape mask gives a 1-D result
    rows = np.array([True, False, True])
    check_key(a, rows, dtype=dtype)
    check_key(a, (slice(None), np.array([True, True, False, True])), dtype=dtype)
    check_key(a, (Ellipsis, np.array([False, True])), dtype=dtype)
    check_key(a, (a[:, :, 0] > 0, 1), dtype=dtype)
    check_key(a, (1, a[0] > 0), dtype=dtype)
    # a comparison result over leading axes, used as a tensor
    x = ag.tensor(a, dtype=dtype)
    m = x[:, :, 0] > 0
    np.testing.assert_array_equal(x[m].numpy(), a[a[:, :, 0] > 0].astype(dtype.numpy))


def test_mask_shape_must_match():
    x = ag.tensor([1.0, 2.0, 3.0])
    with pytest.raises(IndexError, match="boolean index"):
        x[np.array([True, False])]
    with pytest.raises(IndexError, match="boolean index"):
        x[ag.tensor([1.0, 2.0]) > 1]


def test_float_indices_are_refused():
    x = ag.tensor([10.0, 20.0, 30.0])
    bad_keys = [ag.tensor([0.0, 2.0]), ag.tensor(1.0), np.array([0.0, 2.0]), [0.0, 2.0], 1.0,
                np.float64(1.0), (0, 1.5)]
    for key in bad_keys:
        with pytest.raises(TypeError, match="float"):
            x[key]
    with pytest.raises(TypeError, match="float"):
        ag.index_select(x, 0, ag.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="float"):
        ag.gather(x, 0, ag.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="float"):
        ag.cross_entropy(ag.ones(2, 3), ag.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="float"):
        ag.cross_entropy(ag.ones(2, 3), np.array([0.0, 2.0]))


def test_mask_logic_keeps_masks():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    x = ag.tensor(a)
    cases = [
        ((x > 1) & (x < 4), (a > 1) & (a < 4)),
        ((x < 2) | (x > 3), (a < 2) | (a > 3)),
        ((x > 1) ^ (x > 2), (a > 1) ^ (a > 2)),
        (~(x > 2), ~(a > 2)),
        ((x > 2) & np.array([True, False, True, True]), (a > 2) & [True, False, True, True]),
        (ag.tensor([0.0, 2.0, 0.0, -1.0]).bool(), np.array([0.0, 2.0, 0.0, -1.0]) != 0),
    ]
    for mask, want in cases:
        assert mask.is_mask
        np.testing.assert_array_equal(mask.numpy(), want.astype(np.float64))
        np.testing.assert_array_equal(x[mask].numpy(), a[want])
    with pytest.raises(TypeError, match="mask"):
        x & (x > 1)  # & on a tensor that is not a mask: as torch, no bitwise ops on floats
    with pytest.raises(TypeError, match="mask"):
        ~x
    assert not (x * 1).is_mask and not x.is_mask


def test_0d_masks():
    t = ag.tensor(5.0, requires_grad=True)
    check_key(np.array(5.0), np.array(True))
    check_key(np.array(5.0), False)
    y = t[t > 3]  # a 0-d comparison result: as torch, shape (1,) when true
    assert y.shape == (1,) and y.tolist() == [5.0]
    assert t[t > 7].shape == (0,)


def test_mask_flag_follows_indexing_and_detach():
    x = ag.tensor([[1.0, 5.0], [7.0, 2.0]])
    m = x > 3
    assert m[0].is_mask and m[:, ::-1].is_mask and m.detach().is_mask
    assert not (m + 0).is_mask


# ---- the sweep: every other index form, against NumPy ------------------------------------------


SHAPE = (4, 3, 5)


@pytest.mark.parametrize("key", [
    1, -1, (2, -3), (slice(None, None, 2),), (slice(None, None, -1),),
    (slice(3, 0, -2), slice(None), slice(-2, None)), (None, 1), (Ellipsis, 2), (1, Ellipsis),
    (None, Ellipsis, None), (slice(1, 1),), [3, 0, 0], [-1, 2], ([0, 2], [1, 1]),
    ([0, 2], slice(None), [4, 0]), (slice(None), [0, 2], [4, 0]), (1, slice(None), [2, 3]),
    (slice(None), 1, [2, 3]), (np.array([[0, 1], [3, 3]]),), (np.array([[0, 1], [3, 3]]), 2),
    ([0, 1], None, [1, 2]), ([], ), (np.array([], dtype=np.int64), slice(None), 0),
    (np.int64(2), np.array([1, 0])), (slice(None), None, [0, 0, 2]),
    True, False, (1, True), (np.True_, slice(None), [1, 2]), (np.False_, slice(None), 2), (np.array(True), Ellipsis, [0]),
])
def test_index_forms_match_numpy(key):
    a = np.arange(60.0).reshape(SHAPE) / 7
    check_key(a, key)


def test_random_keys_match_numpy():
    rng = np.random.default_rng(1914)
    for trial in range(300):
        ndim = int(rng.integers(0, 4))
        shape = tuple(int(rng.integers(0, 4)) for _ in range(ndim))
        a = rng.standard_normal(shape)
        key, dim, ellipsis = [], 0, False
        while dim < ndim:
            kind = rng.integers(8)
            extent = shape[dim]
            if kind == 0 and extent:
                key.append(int(rng.integers(-extent, extent)))
            elif kind == 1:
                lo, hi = sorted(rng.integers(-5, 6, 2))
                step = int(rng.choice([-3, -2, -1, 1, 2, 3]))
                key.append(slice(int(lo), int(hi), step) if step > 0 else
                           slice(int(hi), int(lo), step))
            elif kind == 2:
                key.append(None)
                continue
            elif kind == 3 and extent:
                key.append(list(rng.integers(-extent, extent, int(rng.integers(0, 4)))))
            elif kind == 4:
                span = int(rng.integers(1, ndim - dim + 1))
                key.append(rng.random(shape[dim:dim + span]) < 0.5)
                dim += span
                continue
            elif kind == 6 and rng.random() < 0.3:
                key.append(bool(rng.integers(2)))  # a 0-d mask: a new axis of extent 1 or 0
                continue
            elif kind == 5 and not ellipsis:
                key.append(Ellipsis)
                ellipsis = True
                dim += int(rng.integers(0, ndim - dim + 1))
                continue
            else:
                key.append(slice(None))
            dim += 1
        key = tuple(key)
        try:
            want = a[key]
        except IndexError:  # e.g. integer lists that do not broadcast together
            with pytest.raises(IndexError):
                ag.tensor(a)[key]
            continue
        del want
        check_key(a, key)


def test_index_errors():
    x = ag.ones(2, 3)
    with pytest.raises(IndexError, match="out of range|out of bounds"):
        x[[0, 2]]
    with pytest.raises(IndexError, match="out of range|out of bounds"):
        x[:, [-4]]
    with pytest.raises(IndexError, match="broadcast"):
        x[[0, 1], [0, 1, 2]]
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., ...]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]
    with pytest.raises(TypeError):
        x["a"]
