"""The cases of bindings/c/example.c through the Python package.

f(x, W) = sum(relu(x @ W) * 2) with x (2, 3) and W (3, 2) in float64; the expected value and
gradients are worked out here with plain Python loops (no library, no vectorised NumPy):
z = x @ W, dz = 2 * [z > 0], df/dx = dz @ W^T, df/dW = x^T @ dz. Then the error cases: a
freed handle and mismatched shapes raise the right exceptions with the C messages, and the
library keeps working afterwards.
"""

import gc

import numpy as np
import pytest

import libautograd as ag

X = [[1.0, 2.0, -1.0], [0.5, -1.5, 2.0]]
W = [[0.5, -1.0], [1.5, 0.25], [-0.5, 2.0]]
M, K, N = 2, 3, 2


def _by_hand():
    z = [[sum(X[i][k] * W[k][j] for k in range(K)) for j in range(N)] for i in range(M)]
    dz = [[2.0 if z[i][j] > 0.0 else 0.0 for j in range(N)] for i in range(M)]
    f = sum(2.0 * max(z[i][j], 0.0) for i in range(M) for j in range(N))
    dx = [[sum(dz[i][j] * W[k][j] for j in range(N)) for k in range(K)] for i in range(M)]
    dw = [[sum(X[i][k] * dz[i][j] for i in range(M)) for j in range(N)] for k in range(K)]
    return z, f, dx, dw


def test_example_values_and_gradients(no_leaks):
    z, want_f, want_dx, want_dw = _by_hand()
    assert sum(v < 0 for row in z for v in row) > 0  # relu has work to do

    x = ag.tensor(X, dtype=ag.float64, requires_grad=True)
    w = ag.tensor(W, dtype=ag.float64, requires_grad=True)
    two = ag.tensor(2.0)
    assert two.shape == () and not two.requires_grad

    xw = x @ w
    f = (ag.relu(xw) * two).sum()
    f.backward()

    assert xw.shape == (2, 2)
    np.testing.assert_allclose(xw.numpy(), z, rtol=1e-12)
    assert f.item() == pytest.approx(want_f, rel=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), want_dx, rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), want_dw, rtol=1e-12)
    assert two.grad is None  # a constant gets no gradient


def test_example_errors_then_library_still_works(no_leaks):
    a = ag.ones(2, 3)
    stale = ag.ones(2, 3)
    stale.free()  # the Python object now holds a freed handle, as the C example's `stale`

    with pytest.raises(ag.InvalidHandleError) as info:
        ag.add(a, stale)
    err = info.value
    assert err.status == 1 and err.status_name == "AG_ERR_INVALID_HANDLE"
    assert "is not a live tensor handle" in err.message
    assert err.message.startswith("ag_add")
    assert isinstance(err, ag.AutogradError)

    m23, m45 = ag.ones(2, 3), ag.ones(4, 5)
    with pytest.raises(ag.ShapeError) as info:
        m23 @ m45
    err = info.value
    assert err.status == 3 and err.status_name == "AG_ERR_SHAPE"
    assert "inner extents differ: [2, 3] @ [4, 5]" in err.message
    assert isinstance(err, ValueError)
    assert "inner extents differ" in str(err) and "AG_ERR_SHAPE" in str(err)

    # Carry on: d/dv sum(v * v) = 2v
    v_data = [3.0, -1.5, 0.25, 2.0]
    v = ag.tensor(v_data, requires_grad=True)
    (v * v).sum().backward()
    assert v.grad.numpy().tolist() == [2.0 * e for e in v_data]
    del a, stale, m23, m45, v, err, info
    gc.collect()
