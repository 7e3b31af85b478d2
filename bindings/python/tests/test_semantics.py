"""Semantics of the Python layer: operators, grad mode, detach, accumulation, retain/create
graph, grad(), hooks, creation functions, errors and handle lifetime. References are NumPy
or derivatives worked out by hand."""

import gc
import threading

import numpy as np
import pytest

import libautograd as ag
from libautograd import hooks as ag_hooks


# ---- operators with Python numbers on either side ----------------------------------------------


@pytest.mark.parametrize("dtype", [ag.float32, ag.float64])
def test_operators_with_scalars_on_both_sides(dtype):
    a = np.array([[0.5, 1.5, 2.0], [3.0, 0.25, 1.0]])
    x = ag.tensor(a, dtype=dtype)
    a = a.astype(dtype.numpy)
    cases = {
        "x + 2": (x + 2, a + 2), "2 + x": (2 + x, 2 + a),
        "x - 2.5": (x - 2.5, a - 2.5), "2.5 - x": (2.5 - x, 2.5 - a),
        "x * 3": (x * 3, a * 3), "3 * x": (3 * x, 3 * a),
        "x / 4": (x / 4, a / 4), "4 / x": (4 / x, 4 / a),
        "x ** 2": (x ** 2, a ** 2), "2 ** x": (2 ** x, 2.0 ** a),
        "-x": (-x, -a), "+x": (+x, a), "abs(-x)": (abs(-x), a),
        "x @ x.T": (x @ x.T, a @ a.T),
        "np.float64(2) * x": (np.float64(2) * x, 2 * a),
        "x + ndarray": (x + np.ones(3), a + 1), "ndarray - x": (np.ones(3) - x, 1 - a),
        "ndarray * x": (np.full((2, 1), 2.0) * x, 2 * a),
        "x < 1": (x < 1, (a < 1).astype(a.dtype)), "1 < x": (1 < x, (1 < a).astype(a.dtype)),
        "x == 1.0": (x == 1.0, (a == 1.0).astype(a.dtype)),
        "x != 1.0": (x != 1.0, (a != 1.0).astype(a.dtype)),
        "x >= 1.5": (x >= 1.5, (a >= 1.5).astype(a.dtype)),
    }
    tol = 1e-6 if dtype is ag.float32 else 1e-14
    for what, (got, want) in cases.items():
        assert isinstance(got, ag.Tensor), what
        assert got.dtype is dtype, what
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, err_msg=what)


def test_scalar_operator_gradients_by_hand():
    x = ag.tensor([0.5, 2.0], requires_grad=True)
    y = (3 - x) * (1 / x) + 2 ** x + x ** 3
    y.sum().backward()
    a = np.array([0.5, 2.0])
    # d/dx [(3 - x)/x + 2^x + x^3] = -3/x^2 + ln2 * 2^x + 3x^2
    np.testing.assert_allclose(x.grad.numpy(), -3 / a**2 + np.log(2) * 2.0**a + 3 * a**2,
                               rtol=1e-14)


def test_unsupported_operands_raise_type_error():
    x = ag.ones(3)
    for bad in ("a", None, object(), 1j):
        with pytest.raises(TypeError):
            x + bad
        with pytest.raises(TypeError):
            bad * x
    with pytest.raises(TypeError):
        2 @ x
    assert (x == "a") is False  # equality with a non-number falls back to identity
    assert x != None  # noqa: E711


def test_hash_identity_and_bool():
    x, y = ag.ones(2), ag.ones(2)
    assert len({x, y}) == 2 and {x: 1}[x] == 1  # identity hashing despite elementwise ==
    assert bool(ag.tensor(3.0)) and not bool(ag.tensor([0.0]))
    with pytest.raises(ValueError):
        bool(x)
    assert float(ag.tensor([[2.5]])) == 2.5


def test_dtype_mismatch_is_dtype_error():
    with pytest.raises(ag.DTypeError) as info:
        ag.ones(2, dtype=ag.float32) + ag.ones(2, dtype=ag.float64)
    assert isinstance(info.value, TypeError)
    assert "different dtypes (float32 and float64)" in info.value.message


# ---- grad mode ---------------------------------------------------------------------------------


def test_no_grad_records_nothing_and_restores():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    assert ag.is_grad_enabled()
    with ag.no_grad():
        assert not ag.is_grad_enabled()
        y = x * 2
        assert not y.requires_grad
        with ag.enable_grad():
            assert ag.is_grad_enabled()
            assert (x * 2).requires_grad
        assert not ag.is_grad_enabled()
    assert ag.is_grad_enabled()
    with pytest.raises(ag.StateError) as info:
        y.sum().backward()  # no graph was recorded
    assert "does not require grad" in info.value.message


def test_grad_mode_restored_after_exception():
    with pytest.raises(KeyError):
        with ag.no_grad():
            raise KeyError("boom")
    assert ag.is_grad_enabled()
    with pytest.raises(KeyError):
        with ag.set_grad_enabled(False):
            assert not ag.is_grad_enabled()
            raise KeyError("boom")
    assert ag.is_grad_enabled()


def test_set_grad_enabled_as_call_and_decorator():
    ag.set_grad_enabled(False)
    try:
        assert not ag.is_grad_enabled()
    finally:
        ag.set_grad_enabled(True)
    assert ag.is_grad_enabled()

    @ag.no_grad()
    def evaluate(t):
        return ag.is_grad_enabled(), (t * 2).requires_grad

    assert evaluate(ag.ones(1, requires_grad=True)) == (False, False)
    assert ag.is_grad_enabled()
    with pytest.raises(TypeError):
        ag.set_grad_enabled("no")


def test_grad_mode_is_per_thread():
    seen = []
    with ag.no_grad():
        worker = threading.Thread(target=lambda: seen.append(ag.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True]


# ---- graph semantics ---------------------------------------------------------------------------


def test_detach_cuts_the_graph():
    x = ag.tensor([1.0, -2.0], requires_grad=True)
    d = (x * 3).detach()
    assert not d.requires_grad
    np.testing.assert_array_equal(d.numpy(), [3.0, -6.0])
    (x * d).sum().backward()  # d is a constant: d(x * d)/dx = d
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, -6.0])


def test_gradients_accumulate_until_zero_grad():
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert x.grad is None
    (x * x).sum().backward()
    (x * 5).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2 + 5, 4 + 5, 6 + 5])
    snapshot = x.grad
    x.zero_grad()
    assert x.grad is None
    np.testing.assert_array_equal(snapshot.numpy(), [7, 9, 11])  # a snapshot stays
    (x * 5).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [5, 5, 5])
    x.grad = None  # as zero_grad
    assert x.grad is None
    with pytest.raises(TypeError):
        x.grad = ag.ones(3)


def test_backward_twice_needs_retain_graph():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(ag.StateError) as info:
        y.backward()
    err = info.value
    assert err.status == 5 and err.status_name == "AG_ERR_STATE"
    assert "retain_graph" in err.message
    assert isinstance(err, RuntimeError)

    z = (x.exp() * x).sum()
    x.zero_grad()
    z.backward(retain_graph=True)
    z.backward()  # retained: runs again and accumulates twice
    a = np.array([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp(a) * (1 + a)), rtol=1e-14)


def test_backward_with_seed_and_requires_grad_rules():
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    with pytest.raises(ag.StateError) as info:
        y.backward()
    assert "seed" in info.value.message
    y.backward([1.0, 0.5, 0.0])  # an array-like seed
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 0.0])
    with pytest.raises(ag.ShapeError):
        (x * x).backward(ag.ones(2))
    with pytest.raises(ag.StateError):
        y.requires_grad = False  # not a leaf
    leaf = ag.zeros(2)
    assert not leaf.requires_grad
    assert leaf.requires_grad_() is leaf and leaf.requires_grad
    leaf.requires_grad = False
    assert not leaf.requires_grad
    with pytest.raises(TypeError):
        leaf.requires_grad = 1


def test_create_graph_second_derivative_by_hand():
    a = np.array([0.5, -1.0, 2.0])
    x = ag.tensor(a, requires_grad=True)
    y = (x ** 3 + ag.sin(x)).sum()
    y.backward(create_graph=True)
    g = x.grad  # 3x^2 + cos x, itself differentiable
    np.testing.assert_allclose(g.numpy(), 3 * a**2 + np.cos(a), rtol=1e-14)
    assert g.requires_grad
    x.zero_grad()
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * a - np.sin(a), rtol=1e-14)


def test_grad_function_and_hessian_vector_product():
    a = np.array([1.0, 2.0])
    x = ag.tensor(a, requires_grad=True)
    w = ag.tensor([3.0, -1.0], requires_grad=True)
    y = (x * x * w).sum()  # dy/dx = 2xw, dy/dw = x^2
    gx, gw = ag.grad(y, [x, w], create_graph=True)
    np.testing.assert_array_equal(gx.numpy(), 2 * a * np.array([3.0, -1.0]))
    np.testing.assert_array_equal(gw.numpy(), a**2)
    assert x.grad is None and w.grad is None  # grad() leaves .grad alone
    # Hessian-vector product along v: d/dx <2xw, v> = 2 w v
    (hx,) = ag.grad(gx, x, grad_outputs=[np.array([1.0, 10.0])])
    np.testing.assert_array_equal(hx.numpy(), [6.0, -20.0])

    unused = ag.ones(2, requires_grad=True)
    z = (x * 2).sum()
    with pytest.raises(ag.StateError) as info:
        ag.grad(z, [x, unused], retain_graph=True)
    assert "not used" in info.value.message
    gx, gu = ag.grad(z, [x, unused], allow_unused=True)
    assert gu is None and gx.numpy().tolist() == [2.0, 2.0]
    with pytest.raises(TypeError):
        ag.grad(z, ["x"])


# ---- hooks -------------------------------------------------------------------------------------


def test_hook_sees_and_replaces_the_gradient(no_leaks):
    hooks_before = ag_hooks.live_hook_count()
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = x.register_hook(lambda g: seen.append(g.numpy()))
    doubling = x.register_hook(lambda g: g * 2)
    (x * x).sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, 4.0])
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])

    doubling.remove()
    handle.remove()
    handle.remove()  # removing twice is harmless
    x.zero_grad()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    assert len(seen) == 1

    x.register_hook(lambda g: None)  # left registered: freed with x
    del x, handle, doubling
    gc.collect()
    assert ag_hooks.live_hook_count() == hooks_before  # destroy ran for every hook


def test_hook_exception_becomes_callback_error():
    x = ag.tensor([1.0], requires_grad=True)

    def broken(g):
        raise ZeroDivisionError("inside the hook")

    x.register_hook(broken)
    with pytest.raises(ag.CallbackError) as info:
        (x * 3).sum().backward()
    assert info.value.status == 7
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "returned" in info.value.message

    y = ag.tensor([1.0], requires_grad=True)
    y.register_hook(lambda g: ag.ones(3))  # wrong shape
    with pytest.raises(ag.ShapeError) as info:
        (y * 3).sum().backward()
    assert "replacement gradient" in info.value.message
    with pytest.raises(ag.StateError):
        ag.ones(1).register_hook(lambda g: None)  # no grad will flow there
    with pytest.raises(TypeError):
        y.register_hook(42)


def test_hook_destroy_nested_in_another_hooks_destroy(tmp_path):
    """Removing a hook whose callable is the last owner of a tensor with a hook of its own: the
    first destroy frees the tensor, whose hook's destroy runs inside it on this thread. It used
    to take a Python lock the outer one held (a hang), so it runs in a subprocess with a
    timeout."""
    import os
    import subprocess
    import sys

    code = (
        "import libautograd as ag\n"
        "from libautograd import hooks\n"
        "x = ag.tensor([1.0], requires_grad=True)\n"
        "a, b = x * 2, x * 3\n"
        "b.register_hook(lambda g: None)\n"
        "h = a.register_hook(lambda g, _keep=[b]: None)\n"
        "del b\n"
        "n = hooks.live_hook_count()\n"
        "h.remove()\n"
        "assert hooks.live_hook_count() == n - 2, hooks.live_hook_count()\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path,
                          env={**os.environ, "AUTOGRAD_LIBRARY": os.path.abspath(ag.library_path())})
    assert done.returncode == 0 and done.stdout == "done\n", done.stdout + done.stderr


# ---- creation ----------------------------------------------------------------------------------


def test_creation_functions_against_numpy():
    np.testing.assert_array_equal(ag.zeros(2, 3).numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(ag.ones((2, 3), dtype=ag.float32).numpy(), np.ones((2, 3)))
    assert ag.ones([4]).dtype is ag.float64 and ag.zeros().shape == ()
    np.testing.assert_array_equal(ag.full((2, 2), 7.5).numpy(), np.full((2, 2), 7.5))
    np.testing.assert_array_equal(ag.full(3, -1).numpy(), [-1.0, -1.0, -1.0])
    np.testing.assert_allclose(ag.arange(5).numpy(), np.arange(5.0))
    np.testing.assert_allclose(ag.arange(1, 2, 0.25).numpy(), np.arange(1, 2, 0.25))
    assert ag.arange(3, 0).shape == (0,)
    np.testing.assert_array_equal(ag.eye(3).numpy(), np.eye(3))
    np.testing.assert_array_equal(ag.eye(2, 4).numpy(), np.eye(2, 4))
    z = ag.zeros_like(ag.ones(2, dtype=ag.float32))
    assert z.dtype is ag.float32 and z.numpy().tolist() == [0.0, 0.0]
    assert ag.ones(2, requires_grad=True).requires_grad


def test_random_creators_are_seeded_and_in_range():
    u = ag.rand(1000, low=-2.0, high=3.0, seed=5).numpy()
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.2
    np.testing.assert_array_equal(u, ag.rand(1000, low=-2.0, high=3.0, seed=5).numpy())
    assert not np.array_equal(u, ag.rand(1000, low=-2.0, high=3.0, seed=6).numpy())
    n = ag.randn(4000, mean=1.0, std=2.0, seed=1).numpy()
    assert abs(n.mean() - 1.0) < 0.15 and abs(n.std() - 2.0) < 0.15
    assert not np.array_equal(ag.randn(8).numpy(), ag.randn(8).numpy())  # seed=None: fresh
    assert ag.randn(2, 3, seed=0, dtype=ag.float32).dtype is ag.float32
    with pytest.raises(ag.ArgumentError):
        ag.randn(3, std=-1.0, seed=0)
    with pytest.raises(ValueError):
        ag.rand(3, seed=-1)


def test_init_functions_follow_their_bounds():
    fan_in, fan_out = 50, 20
    w = ag.kaiming_uniform(fan_out, fan_in, seed=3).numpy()
    assert w.shape == (20, 50) and np.abs(w).max() <= np.sqrt(6 / fan_in)
    x = ag.xavier_uniform((fan_out, fan_in), seed=3).numpy()
    assert np.abs(x).max() <= np.sqrt(6 / (fan_in + fan_out))
    kn = ag.kaiming_normal(400, 100, seed=4).numpy()
    assert abs(kn.std() - np.sqrt(2 / 100)) < 0.01
    xn = ag.init((400, 100), "xavier_normal", seed=4).numpy()
    assert abs(xn.std() - np.sqrt(2 / 500)) < 0.01
    np.testing.assert_array_equal(w, ag.init((20, 50), "kaiming_uniform", seed=3).numpy())
    with pytest.raises(ValueError):
        ag.init((2, 2), "nope")
    with pytest.raises(ag.ArgumentError):
        ag.init((2, 2), 9)
    with pytest.raises(ag.ShapeError):
        ag.init((), 1)


# ---- Python-side argument checks ----------------------------------------------------------------


def test_python_argument_mistakes_raise_before_c():
    x = ag.ones(2, 3)
    with pytest.raises(TypeError):
        x.sum(axis=1.0)
    with pytest.raises(TypeError):
        x.reshape(2.0, 3)
    with pytest.raises(ValueError):
        x.sum(axis=2**70)
    with pytest.raises(TypeError):
        ag.exp([1.0, 2.0])  # module functions want Tensors
    with pytest.raises(TypeError):
        ag.zeros(2, dtype="int8")
    with pytest.raises(TypeError):
        ag.index_select(x, 0, [0.5])
    with pytest.raises(TypeError):
        ag.concat(x)
    with pytest.raises(IndexError):
        x[2]
    with pytest.raises(IndexError):
        x[0, 0, 0]


def test_library_rejections_carry_status_and_message():
    x = ag.ones(2, 3)
    cases = [
        (lambda: x.sum(axis=2), ag.ArgumentError, "axis 2 is out of range for a tensor of rank 2"),
        (lambda: x.reshape(4, 2), ag.ShapeError, "does not match"),
        (lambda: x.reshape(-1, -1), ag.ArgumentError, "more than one extent is -1"),
        (lambda: x.squeeze(0), ag.ShapeError, "axis 0 has extent 2, not 1"),
        (lambda: x.item(), ag.ShapeError, "item() needs exactly one element"),
        (lambda: ag.slice(x, 0, 0, 2, 0), ag.ArgumentError, "step must be positive"),
        (lambda: ag.index_select(x, 0, [3]), ag.ArgumentError, "index 3 is out of range"),
        (lambda: ag.cross_entropy(x, [0, 5]), ag.ArgumentError, "label 5 is out of range"),
        (lambda: ag.arange(0, 1, 0), ag.ArgumentError, "step must not be 0"),
        (lambda: x.permute(0, 0), ag.ArgumentError, "is not a permutation"),
        (lambda: ag.set_num_threads(0), ag.ArgumentError, "between 1 and 256"),
        (lambda: ag.zeros(2, -3), ag.ShapeError, "negative extent -3"),
        (lambda: ag.var(x, correction=-1), ag.ArgumentError, "correction -1 is negative"),
    ]
    for call, cls, fragment in cases:
        with pytest.raises(cls) as info:
            call()
        assert fragment in info.value.message, (fragment, info.value.message)
        assert info.value.status_name.startswith("AG_ERR_")


def test_thread_count_and_version():
    before = ag.num_threads()
    try:
        ag.set_num_threads(1)
        assert ag.num_threads() == 1 == ag.get_num_threads()
    finally:
        ag.set_num_threads(before)
    assert ag.version().count(".") == 2
    assert "AG_ERR_SHAPE" == ag.errors.status_name(3)
    assert ag.errors.status_name(99) == "AG_UNKNOWN_STATUS"


def test_repr_and_graph_to_dot():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], dtype=float64, requires_grad=True)"
    assert repr(ag.tensor(1.5, dtype=ag.float32)) == "tensor(1.5, dtype=float32)"
    dot = ag.graph_to_dot((x.exp() * 2).sum())
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    x.free()
    assert "not live" in repr(x)


def test_gradcheck_passes_and_detects():
    x = ag.randn(4, seed=2, requires_grad=True)
    assert ag.gradcheck(lambda t: (t.sin() * t).sum(), [x])
    with pytest.raises(ag.CallbackError) as info:
        ag.gradcheck(lambda t: 1 / 0, [x])
    assert isinstance(info.value.__cause__, ZeroDivisionError)


# ---- handle lifetime -----------------------------------------------------------------------------


def test_handles_are_freed_on_collection():
    gc.collect()
    start = ag.live_handle_count()
    x = ag.tensor(np.ones((3, 3)), requires_grad=True)
    w = ag.randn(3, 3, seed=0, requires_grad=True)
    y = ag.tanh(x @ w).sum()
    y.backward()
    grads = [x.grad, w.grad]
    opt = ag.Adam([x, w], lr=0.1)
    opt.step()
    parts = list(ag.ones(2, 2))
    assert ag.live_handle_count() > start
    del x, w, y, grads, opt, parts
    gc.collect()
    assert ag.live_handle_count() == start


def test_reference_cycles_are_collected(no_leaks):
    class Holder:
        pass

    h = Holder()
    h.me = h
    h.t = ag.ones(100)
    h.u = h.t * 2
    del h  # only the cycle collector can free it


def test_freed_tensor_raises_invalid_handle():
    x = ag.ones(2)
    x.free()
    x.free()  # the second free is a no-op on the Python side
    for call in (lambda: x.shape, lambda: x + 1, lambda: x.numpy(), lambda: ag.exp(x)):
        with pytest.raises(ag.InvalidHandleError) as info:
            call()
        assert "is not a live tensor handle" in info.value.message
    assert isinstance(info.value, ReferenceError)


def test_interpreter_exit_with_live_objects_is_clean(tmp_path):
    # Tensors, hooks, an optimizer and a reference cycle still alive at exit: no crash, no
    # "Exception ignored in __del__" noise.
    import os
    import subprocess
    import sys

    code = (
        "import libautograd as ag\n"
        "x = ag.ones(3, requires_grad=True)\n"
        "h = x.register_hook(lambda g: g * 2)\n"
        "y = (x * x).sum()\n"
        "opt = ag.Adam([x])\n"
        "class C: pass\n"
        "c = C(); c.c = c; c.t = ag.ones(2); c.r = x * 3\n"
        "c.r.register_hook(lambda g: None)\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path,
                          env={**os.environ, "AUTOGRAD_LIBRARY": os.path.abspath(ag.library_path())})
    assert done.returncode == 0 and done.stdout == "done\n" and done.stderr == ""


def test_tensor_constructor_and_module_function_forms():
    t = ag.Tensor([[1.0, 2.0]], requires_grad=True)
    assert t.shape == (1, 2) and t.requires_grad
    a = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(ag.add(t, 1).numpy(), a + 1)
    np.testing.assert_array_equal(ag.sub(1, t).numpy(), 1 - a)
    np.testing.assert_array_equal(ag.mul(t, t).numpy(), a * a)
    np.testing.assert_array_equal(ag.div(2, t).numpy(), 2 / a)
    np.testing.assert_array_equal(ag.pow(2, t).numpy(), 2 ** a)
    with pytest.raises(TypeError):
        ag.add(1, 2)
