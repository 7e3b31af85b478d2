"""In-place updates (issue 14, item 21): `+= -= *= /= **=`, `zero_()`, `copy_()` and item
assignment write into the tensor itself (through ag_tensor_copy_: every Python name and every
detached alias sees the new values, and graphs that saved the old values refuse a stale
backward). They are allowed on leaves, under no_grad for a leaf that requires grad; anything
else raises StateError saying what to do instead. References: NumPy."""

import numpy as np
import pytest

import libautograd as ag


def test_augmented_assignment_writes_in_place():
    a = np.array([1.0, 2.0, 4.0])
    x = ag.tensor(a)
    alias, view = x, x.detach()  # another name, and a tensor sharing x's values
    x += 1
    x -= np.array([0.5, 0.5, 0.5])
    x *= ag.tensor([2.0, 3.0, 4.0])
    x /= 4
    x **= 2
    want = ((a + 1 - 0.5) * [2.0, 3.0, 4.0] / 4) ** 2
    assert x is alias  # not rebound to a new tensor
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-15)
    np.testing.assert_allclose(view.numpy(), want, rtol=1e-15)


@pytest.mark.parametrize("dtype", [ag.float32, ag.float64])
def test_sgd_idiom_under_no_grad(dtype):
    # w <- w - lr * dL/dw with L = sum((w * c)^2): dL/dw = 2 c^2 w
    w0 = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=dtype.numpy)
    c = np.array([[1.0, 2.0], [0.5, 3.0]], dtype=dtype.numpy)
    lr = 0.01
    w = ag.tensor(w0, dtype=dtype, requires_grad=True)
    want = w0.astype(np.float64)
    for step in range(3):
        loss = ((w * ag.tensor(c, dtype=dtype)) ** 2).sum()
        loss.backward()
        with ag.no_grad():
            w -= lr * w.grad
        w.zero_grad()
        want = want - lr * 2 * c.astype(np.float64) ** 2 * want
        assert w.requires_grad and w.is_leaf, step  # still a parameter, not a result
    tol = 1e-6 if dtype is ag.float32 else 1e-15
    np.testing.assert_allclose(w.numpy(), want, rtol=tol)
    ((w * ag.tensor(c, dtype=dtype)) ** 2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * c.astype(np.float64) ** 2 * want, rtol=tol)


def test_zero_and_copy():
    x = ag.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert x.copy_([10.0, 20.0, 30.0]) is x  # broadcast over the rows
    np.testing.assert_array_equal(x.numpy(), [[10.0, 20.0, 30.0]] * 2)
    x.copy_(ag.full((2, 3), 7.0))
    np.testing.assert_array_equal(x.numpy(), np.full((2, 3), 7.0))
    x.copy_(ag.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=ag.float32))  # converted
    np.testing.assert_array_equal(x.numpy(), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert x.zero_() is x
    np.testing.assert_array_equal(x.numpy(), np.zeros((2, 3)))
    w = ag.ones(3, requires_grad=True)
    with ag.no_grad():
        w.zero_()
        w.copy_(np.array([1.0, 2.0, 3.0]))
    assert w.requires_grad and w.is_leaf
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0, 3.0])


def test_item_assignment():
    a = np.arange(12.0).reshape(3, 4)
    x = ag.tensor(a)
    b = a.copy()
    for key, value in [(1, 5.0), ((slice(None), slice(None, None, 2)), [[-1.0, -2.0]] * 3),
                       ((0, -1), 9.0), ([2, 0], np.array([0.5, 0.25, 0.125, 0.0]))]:
        x[key] = value
        b[key] = value
        np.testing.assert_array_equal(x.numpy(), b)
    x[x > 5] = 0.0
    b[b > 5] = 0.0
    np.testing.assert_array_equal(x.numpy(), b)
    x[0] += 100  # getitem, in-place add on the copy, setitem
    b[0] += 100
    np.testing.assert_array_equal(x.numpy(), b)


def test_refused_on_a_leaf_that_requires_grad_while_grad_mode_is_on():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    for update in (lambda: w.__iadd__(1), lambda: w.__isub__(1), lambda: w.__imul__(2),
                   lambda: w.__itruediv__(2), lambda: w.zero_(), lambda: w.copy_([3.0, 4.0]),
                   lambda: w.__setitem__(0, 5.0)):
        with pytest.raises(ag.StateError) as info:
            update()
        assert "no_grad" in str(info.value) and "optimizer" in str(info.value)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])  # nothing was written
    assert w.requires_grad and w.is_leaf


def test_refused_on_a_recorded_result():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    y = w * 2
    for mode in (True, False):
        with ag.set_grad_enabled(mode):
            with pytest.raises(ag.StateError) as info:
                y += 1
        assert "result of a recorded operation" in str(info.value)
        assert "y = y + 1" in str(info.value) or "out-of-place" in str(info.value)
    np.testing.assert_array_equal(y.numpy(), [2.0, 4.0])


def test_refused_when_the_operand_requires_grad():
    # torch would record x += w into the graph; a silent copy would drop w's gradient
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    x = ag.zeros(2)
    with pytest.raises(ag.StateError, match="requires grad"):
        x += w
    with pytest.raises(ag.StateError, match="requires grad"):
        x.copy_(w)
    with ag.no_grad():
        x += w  # nothing is recorded under no_grad: allowed
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])


def test_stale_backward_is_refused():
    # sum(x * x) saved x = 1, 2, 3; after an in-place step its backward would read new values
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = (x * x).sum()
    with ag.no_grad():
        x -= 2 * x
    with pytest.raises(ag.StateError):
        loss.backward()
    np.testing.assert_array_equal(x.numpy(), [-1.0, -2.0, -3.0])


def test_shape_and_dtype_mismatch_leave_the_tensor_alone():
    x = ag.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ag.ShapeError):
        x += ag.ones(2, 3)  # the result would not fit x's shape
    with pytest.raises(ag.DTypeError):
        x += ag.ones(3, dtype=ag.float32)
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        x += "a"
    with pytest.raises(TypeError):
        x @= ag.eye(3)  # as torch: no in-place matmul
