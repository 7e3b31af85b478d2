"""Tensor.register_post_accumulate_grad_hook (ag_tensor_register_post_accumulate_grad_hook).

Every expected gradient here is derived by hand (in the comments) or computed with NumPy from
the chain rule, never read back from the engine.
"""

import gc

import numpy as np
import pytest

import libautograd as ag
from libautograd import hooks as ag_hooks


def _two_layers():
    """x (1, 2) -> h = x W1^T -> r = relu(h) -> y = r W2^T (1, 1); loss = sum(y).

    By hand: h = [1*1 + 2*(-1), 1*2 + 2*0.5] = [-1, 3], r = [0, 3], y = 0*0.5 + 3*(-2) = -6.
    dL/dW2 = r = [[0, 3]]; dL/dr = W2 = [0.5, -2]; dL/dh = [0 (h < 0), -2];
    dL/dW1 = (dL/dh)^T x = [[0, 0], [-2, -4]].
    """
    x = ag.tensor([[1.0, 2.0]])
    w1 = ag.tensor([[1.0, -1.0], [2.0, 0.5]], requires_grad=True)
    w2 = ag.tensor([[0.5, -2.0]], requires_grad=True)
    return x, w1, w2


DW1 = [[0.0, 0.0], [-2.0, -4.0]]
DW2 = [[0.0, 3.0]]


def test_fires_once_per_backward_after_accumulation(no_leaks):
    x, w1, w2 = _two_layers()
    seen = {"w1": [], "w2": []}
    h1 = w1.register_post_accumulate_grad_hook(lambda p: seen["w1"].append(p.grad.numpy()))
    h2 = w2.register_post_accumulate_grad_hook(lambda p: seen["w2"].append(p.grad.numpy()))

    ag.linear(ag.relu(ag.linear(x, w1)), w2).sum().backward()
    assert len(seen["w1"]) == 1 and len(seen["w2"]) == 1
    np.testing.assert_array_equal(seen["w1"][0], DW1)
    np.testing.assert_array_equal(seen["w2"][0], DW2)
    np.testing.assert_array_equal(w1.grad.numpy(), DW1)  # what the hook read is the final .grad
    np.testing.assert_array_equal(w2.grad.numpy(), DW2)

    # A second pass without zero_grad: the hook runs after that pass's addition, so it reads
    # twice the gradient (exact: doubling is exact in binary floating point).
    ag.linear(ag.relu(ag.linear(x, w1)), w2).sum().backward()
    assert len(seen["w1"]) == 2 and len(seen["w2"]) == 2
    np.testing.assert_array_equal(seen["w1"][1], 2 * np.array(DW1))
    np.testing.assert_array_equal(seen["w2"][1], 2 * np.array(DW2))
    h1.remove()
    h2.remove()


def test_a_leaf_used_twice_fires_once_with_the_whole_gradient():
    # L = w*w + 3w at w = 2: dL/dw = 2w + 3 = 7, from two branches; one call, after both.
    w = ag.tensor([2.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.numpy().tolist()))
    (w * w + w * 3.0).sum().backward()
    assert seen == [[7.0]]


def test_last_layer_fires_before_earlier_layers_gradients_are_computed():
    x, w1, w2 = _two_layers()
    events = []

    def on_w2(p):
        events.append("w2 ready")
        assert w1.grad is None  # the layer nearer the input has no gradient yet

    w2.register_post_accumulate_grad_hook(on_w2)
    w1.register_post_accumulate_grad_hook(lambda p: events.append("w1 ready"))
    h = ag.linear(x, w1)
    h.register_hook(lambda g: events.append("h grad"))  # the hidden pre-activation (returns None)
    ag.linear(ag.relu(h), w2).sum().backward()
    # h's gradient needs the relu's backward, which runs after w2's gradient is complete; w1's
    # gradient comes from h's.
    assert events == ["w2 ready", "h grad", "w1 ready"]


def test_matches_numpy_on_a_random_mlp(rng):
    # loss = mean((tanh(X W1^T + b1) W2^T - Y)^2), gradients by the chain rule in NumPy.
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    W1, b1, W2 = rng.normal(size=(4, 3)), rng.normal(size=4), rng.normal(size=(2, 4))
    A = np.tanh(X @ W1.T + b1)
    P = A @ W2.T
    dP = 2.0 * (P - Y) / P.size
    dW2 = dP.T @ A
    dZ = (dP @ W2) * (1.0 - A ** 2)
    expect = {"W1": dZ.T @ X, "b1": dZ.sum(axis=0), "W2": dW2}

    params = {"W1": ag.tensor(W1, requires_grad=True), "b1": ag.tensor(b1, requires_grad=True),
              "W2": ag.tensor(W2, requires_grad=True)}
    order, got = [], {}
    for name, p in params.items():
        def record(leaf, name=name):
            order.append(name)
            got[name] = leaf.grad.numpy()
        p.register_post_accumulate_grad_hook(record)
    pred = ag.linear(ag.tanh(ag.linear(ag.from_numpy(X), params["W1"], params["b1"])), params["W2"])
    ag.mse_loss(pred, Y).backward()
    assert order[0] == "W2" and sorted(order) == ["W1", "W2", "b1"]
    for name in expect:
        np.testing.assert_allclose(got[name], expect[name], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(got[name], params[name].grad.numpy())


def test_not_run_by_grad():
    w = ag.tensor([2.0, -1.0], requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda p: calls.append(1))
    (g,) = ag.grad((w * w).sum(), [w])
    np.testing.assert_array_equal(g.numpy(), [4.0, -2.0])  # 2w
    assert calls == [] and w.grad is None
    (w * w).sum().backward()
    assert calls == [1]


def test_the_hook_may_write_the_gradient_in_place():
    # What data parallelism does: replace the accumulated gradient by another value (here half
    # of it) in place; the optimizer then steps with it. d(sum(w*w))/dw = 2w = [2, -4].
    w = ag.tensor([1.0, -2.0], requires_grad=True)

    def halve(p):
        p.grad.set_data(p.grad.numpy() / 2)  # set_data returns the tensor: not returned here

    w.register_post_accumulate_grad_hook(halve)
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, -2.0])
    ag.SGD([w], lr=0.5).step()  # w - 0.5 * [1, -2]
    np.testing.assert_array_equal(w.numpy(), [0.5, -1.0])


def test_gradient_written_after_backward_is_what_the_optimizer_uses():
    w = ag.tensor([3.0], requires_grad=True)
    (w * w).sum().backward()  # .grad = 6
    w.grad.set_data([0.25])
    ag.SGD([w], lr=2.0).step()  # 3 - 2 * 0.25
    np.testing.assert_array_equal(w.numpy(), [2.5])


def test_registration_errors():
    w = ag.tensor([1.0], requires_grad=True)
    with pytest.raises(ag.StateError):
        (w * 2).register_post_accumulate_grad_hook(lambda p: None)  # not a leaf
    with pytest.raises(ag.StateError):
        ag.ones(1).register_post_accumulate_grad_hook(lambda p: None)  # no grad required
    with pytest.raises(TypeError):
        w.register_post_accumulate_grad_hook(42)


def test_exception_becomes_callback_error():
    w = ag.tensor([1.0, 2.0], requires_grad=True)

    def broken(p):
        raise ZeroDivisionError("inside the post-accumulate hook")

    w.register_post_accumulate_grad_hook(broken)
    with pytest.raises(ag.CallbackError) as info:
        (w * 3.0).sum().backward()
    assert info.value.status == 7
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "inside the post-accumulate hook" in info.value.message
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0])  # accumulated before the hook

    v = ag.tensor([1.0], requires_grad=True)
    v.register_post_accumulate_grad_hook(lambda p: p.grad)  # returns something
    with pytest.raises(ag.CallbackError) as info:
        (v * 2.0).sum().backward()
    assert isinstance(info.value.__cause__, TypeError)


def test_remove_and_destroy(no_leaks):
    before = ag_hooks.live_hook_count()
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda p: calls.append(1))
    other = w.register_post_accumulate_grad_hook(lambda p: calls.append(2))
    (w * w).sum().backward()
    assert calls == [1, 2]  # registration order
    handle.remove()
    handle.remove()  # removing twice is harmless
    (w * w).sum().backward()
    assert calls == [1, 2, 2]
    with other:
        pass  # leaving the block removes it
    (w * w).sum().backward()
    assert calls == [1, 2, 2]
    w.register_post_accumulate_grad_hook(lambda p: None)  # left registered: freed with w
    del w, handle, other
    gc.collect()
    assert ag_hooks.live_hook_count() == before


def test_a_kept_leaf_stays_usable(no_leaks):
    w = ag.tensor([1.5, -0.5], requires_grad=True)
    kept = []
    w.register_post_accumulate_grad_hook(kept.append)
    (w * w).sum().backward()
    leaf = kept.pop()
    np.testing.assert_array_equal(leaf.numpy(), [1.5, -0.5])
    with ag.no_grad():
        w.copy_([4.0, 5.0])
    np.testing.assert_array_equal(leaf.numpy(), [4.0, 5.0])  # an alias of the leaf's values
    del leaf, w
