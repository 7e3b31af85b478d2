"""Optimizers: a few steps of SGD / Adam / AdamW against the torch.optim formulas written
out in NumPy, on loss = sum(c * (p - t)^2), whose gradient 2c(p - t) is computed by hand."""

import numpy as np
import pytest

import libautograd as ag

P0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
T = np.array([[1.0, 1.0, 1.0], [-1.0, 0.5, 0.0]])
C = np.array([[1.0, 2.0, 0.5], [3.0, 1.0, 0.25]])
STEPS = 5


def _hand_grad(p):
    return 2 * C * (p - T)


def _run(make_opt):
    p = ag.tensor(P0, requires_grad=True)
    opt = make_opt([p])
    history = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = (ag.tensor(C) * (p - ag.tensor(T)) ** 2).sum()
        loss.backward()
        opt.step()
        history.append(p.numpy())
    return history, opt, p


def _sgd_ref(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    p, buf, out = P0.copy(), None, []
    for _ in range(STEPS):
        d = _hand_grad(p) + weight_decay * p
        if momentum:
            buf = d if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
        out.append(p)
    return out


def _adam_ref(lr, b1, b2, eps, weight_decay, decoupled):
    p, m, v, out = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), []
    for t in range(1, STEPS + 1):
        g = _hand_grad(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
            d = g
        else:
            d = g + weight_decay * p
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.02, momentum=0.8, nesterov=True, weight_decay=0.1),
])
def test_sgd_matches_hand_implementation(kwargs, no_leaks):
    got, _, _ = _run(lambda ps: ag.SGD(ps, **kwargs))
    for step, (g, w) in enumerate(zip(got, _sgd_ref(**kwargs))):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


@pytest.mark.parametrize("cls,decoupled,wd", [(ag.Adam, False, 0.0), (ag.Adam, False, 0.05),
                                              (ag.AdamW, True, 0.1)])
def test_adam_family_matches_hand_implementation(cls, decoupled, wd, no_leaks):
    got, _, _ = _run(lambda ps: cls(ps, lr=0.1, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd))
    want = _adam_ref(0.1, 0.8, 0.95, 1e-6, wd, decoupled)
    for step, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


def test_adamw_default_weight_decay_and_lr_property():
    p = ag.ones(2, requires_grad=True)
    opt = ag.AdamW([p])
    assert opt.lr == pytest.approx(1e-3)
    opt.lr = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ag.ArgumentError) as info:
        opt.lr = -1.0
    assert "learning rate must be finite and >= 0" in info.value.message
    assert opt.lr == 0.5  # unchanged
    # one step with zero gradient: only the decoupled decay moves p: p *= 1 - lr * 0.01
    (p * 0.0).sum().backward()
    opt.step()
    np.testing.assert_allclose(p.numpy(), [1 - 0.5 * 0.01] * 2, rtol=1e-15)


def test_optimizer_skips_parameters_without_gradient_and_zero_grad():
    p, q = ag.ones(2, requires_grad=True), ag.ones(2, requires_grad=True)
    opt = ag.SGD([p, q], lr=0.5)
    (p * 2).sum().backward()
    opt.step()
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(q.numpy(), [1.0, 1.0])
    opt.zero_grad()
    assert p.grad is None


def test_optimizer_errors_and_close(no_leaks):
    p = ag.ones(2, requires_grad=True)
    with pytest.raises(ag.ArgumentError) as info:
        ag.SGD([p, p], lr=0.1)
    assert "repeats parameter 0" in info.value.message
    with pytest.raises(ag.StateError):
        ag.SGD([ag.ones(2)], lr=0.1)  # does not require grad
    with pytest.raises(ag.ArgumentError):
        ag.Adam([p], betas=(1.0, 0.999))
    with pytest.raises(ag.ArgumentError):
        ag.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(TypeError):
        ag.SGD([p], lr="fast")
    with pytest.raises(TypeError):
        ag.SGD([p.numpy()], lr=0.1)
    with pytest.raises(ValueError):
        ag.SGD([], lr=0.1)
    with ag.SGD([p], lr=0.1) as opt:
        pass
    with pytest.raises(ag.InvalidHandleError):
        opt.step()  # closed: handle 0
    opt.close()  # closing twice is fine
