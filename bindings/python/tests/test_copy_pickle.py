"""Copies and pickles (issue 14, item 20): copy.copy / copy.deepcopy give a tensor with its own
handle (the same values, dtype, shape and requires_grad; deepcopy of a leaf also copies .grad,
as PyTorch; a result of a recorded operation is refused, as PyTorch); pickling carries the
values, dtype, shape and requires_grad, so unpickling works in another process. Objects that
hold a handle but cannot be copied (optimizers, hook handles) refuse copy and pickle."""

import copy
import gc
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import libautograd as ag


def _package_env():
    """The environment a child Python needs to import this same package and library."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(ag.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "AUTOGRAD_LIBRARY": os.path.abspath(ag.library_path()),
            "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_copy_owns_its_handle(copier, no_leaks):
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    c = copier(x)
    assert c.handle != x.handle
    del x
    gc.collect()  # collecting the original must not free the copy's tensor
    np.testing.assert_array_equal(c.numpy(), [1.0, 2.0, 3.0])
    assert c.requires_grad and c.dtype is ag.float64
    d = copier(c)
    del d
    gc.collect()
    np.testing.assert_array_equal(c.numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_copy_keeps_values_dtype_requires_grad_and_grad(copier):
    a = np.array([[0.1, -2.5], [3.0, 1e-30]], dtype=np.float32)
    x = ag.tensor(a, dtype=ag.float32, requires_grad=True)
    (x * x).sum().backward()
    c = copier(x)
    assert c.dtype is ag.float32 and c.shape == (2, 2) and c.requires_grad
    np.testing.assert_array_equal(c.numpy(), a)
    np.testing.assert_array_equal(c.grad.numpy(), 2 * a)  # PyTorch's deepcopy copies .grad
    # the copy is independent: a backward into it leaves the original's grad alone
    (c * 3).sum().backward()
    np.testing.assert_array_equal(c.grad.numpy(), 2 * a + 3)
    np.testing.assert_array_equal(x.grad.numpy(), 2 * a)
    plain = copier(ag.zeros(0, 3))
    assert plain.shape == (0, 3) and not plain.requires_grad and plain.grad is None


def test_copy_of_a_recorded_result_is_refused():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    for copier in (copy.copy, copy.deepcopy):
        with pytest.raises(RuntimeError, match="leaf"):
            copier(y)
    with ag.no_grad():
        z = x * 2  # recorded nothing: a leaf, copies fine
    np.testing.assert_array_equal(copy.deepcopy(z).numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(copy.deepcopy(y.detach()).numpy(), [2.0, 4.0])


def test_deepcopy_inside_containers_keeps_sharing():
    x = ag.tensor([1.0, 2.0])
    pair = copy.deepcopy([x, x])
    assert pair[0] is pair[1] and pair[0] is not x  # the memo: one copy per original


@pytest.mark.parametrize("dtype", [ag.float32, ag.float64])
@pytest.mark.parametrize("shape", [(), (3,), (2, 0, 3), (2, 3)])
def test_pickle_round_trip(dtype, shape, no_leaks):
    rng = np.random.default_rng(11)
    a = rng.standard_normal(shape).astype(dtype.numpy)
    x = ag.tensor(a, dtype=dtype, requires_grad=bool(len(shape) % 2))
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        y = pickle.loads(pickle.dumps(x, protocol=protocol))
        assert y.handle != x.handle
        assert y.dtype is dtype and y.shape == shape and y.requires_grad == x.requires_grad
        np.testing.assert_array_equal(y.numpy(), a)
        del y
        gc.collect()
        np.testing.assert_array_equal(x.numpy(), a)  # the original's tensor is still there


def test_pickle_of_a_result_gives_a_leaf_with_its_requires_grad():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = pickle.loads(pickle.dumps(x * 3))
    assert y.requires_grad and y.is_leaf and y.grad is None  # as torch.save / torch.load
    np.testing.assert_array_equal(y.numpy(), [3.0, 6.0])


def test_unpickle_in_another_process(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3)).astype(np.float32)
    x = ag.tensor(a, dtype=ag.float32, requires_grad=True)
    mask = ag.tensor([1.0, 5.0]) > 2
    blob = tmp_path / "t.pickle"
    blob.write_bytes(pickle.dumps((x, mask)))
    code = (
        "import pickle, sys\n"
        "import libautograd as ag\n"
        "decoy = ag.tensor([99.0, 98.0])  # the first handle of this process\n"
        "x, m = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "print(x.dtype, x.shape, x.requires_grad, m.is_mask)\n"
        "print(x.numpy().tobytes().hex())\n"
        "print(m.numpy().tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=_package_env())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "float32 (2, 3) True True"
    assert bytes.fromhex(lines[1]) == a.tobytes()
    assert lines[2] == "[0.0, 1.0]"


def test_copy_and_pickle_of_a_freed_tensor_raise():
    x = ag.ones(2)
    x.free()
    for action in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(ag.InvalidHandleError):
            action(x)


def test_optimizers_and_hook_handles_refuse_copy_and_pickle(no_leaks):
    w = ag.ones(2, requires_grad=True)
    opt = ag.SGD([w], lr=0.1)
    hook = w.register_hook(lambda g: None)
    for obj in (opt, hook):
        for action in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be copied or pickled"):
                action(obj)
    (w * w).sum().backward()
    opt.step()  # still usable: nothing was freed or shared
    np.testing.assert_allclose(w.numpy(), [0.8, 0.8])
    hook.remove()
    opt.close()


# ---- the same class elsewhere: callbacks' borrowed tensors -------------------------------------


def test_a_hook_may_keep_its_gradient(no_leaks):
    # PyTorch hooks often keep the gradient (grads.append(g)); the library's handle for it is
    # only lent for the call, so a kept tensor gets a handle of its own
    kept = []
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: kept.append(g))
    (x * 3).sum().backward()
    np.testing.assert_array_equal(kept[0].numpy(), [3.0, 3.0])
    y = ag.tensor([1.0, 2.0], requires_grad=True)
    y.register_hook(lambda g: kept.append(g) or g * 2)  # kept and replaced
    (y * y).sum().backward(create_graph=True)
    np.testing.assert_array_equal(kept[1].numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(y.grad.numpy(), [4.0, 8.0])
    del kept, x, y


def test_a_gradcheck_function_may_keep_its_inputs(no_leaks):
    seen = []

    def fn(a):
        seen.append(a)
        return (a * a).sum()

    assert ag.gradcheck(fn, [ag.tensor([1.0, 2.0], requires_grad=True)])
    np.testing.assert_array_equal(seen[0].numpy(), [1.0, 2.0])
    del seen


def test_dtypes_stay_singletons():
    for dtype in (ag.float32, ag.float64):
        assert pickle.loads(pickle.dumps(dtype)) is dtype
        assert copy.copy(dtype) is dtype and copy.deepcopy(dtype) is dtype
