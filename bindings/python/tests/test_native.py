"""The compiled per-op path (libautograd._native, issue 20): the same results, dtypes, masks,
errors and messages as the pure-Python path, exact gradients of B1's chain, no leaked handles or
references, Tensor subclasses and attributes, several threads, and the Ops that replace ops.py's
functions (name, doc, signature, pickling).

The parity tests run one script under both paths, each in a fresh process (the path is chosen
at import), and compare what it prints line by line. The other tests run on whichever path this
process uses; those about the extension itself skip on the pure path."""

import gc
import inspect
import math
import os
import pickle
import re
import subprocess
import sys
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import libautograd as ag
from libautograd import _accel

native_only = pytest.mark.skipif(not ag.native_enabled(), reason="the pure-Python path is in use")

# ---- the same script on both paths ---------------------------------------------------------------

PARITY_SCRIPT = r'''
import re, sys
import numpy as np
import libautograd as ag

a = ag.tensor(0.5, requires_grad=True)
b = ag.tensor(-1.25, requires_grad=True)
v = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
w = ag.tensor([4.0, 5.0])
m = ag.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -4.0]])
f32 = ag.tensor([1.5, 2.5, 3.5], dtype=ag.float32)
i64 = ag.tensor([1, 2, 3], dtype=ag.int64)
mask = v > 1.5
freed = ag.tensor(1.0)
freed.free()

def show(value):
    if isinstance(value, ag.Tensor):
        return (f"{type(value).__name__} {value.dtype} {value.shape} rg={value.requires_grad} "
                f"mask={value.is_mask} {value.numpy().tobytes().hex()}")
    return repr(value)

def describe(expr):
    try:
        return show(eval(expr))
    except Exception as e:  # the type, the message (handles vary from run to run)
        return f"{type(e).__module__}.{type(e).__qualname__}: " + re.sub(r"0x[0-9a-f]+", "0x?", str(e))

for expr in sys.stdin.read().splitlines():
    print(f"{expr} -> {describe(expr)}")

# gradients through a mix of the fast and the fallback forms
x = ag.tensor([0.3, -0.7, 1.1], requires_grad=True)
y = ag.tensor(0.9, requires_grad=True)
z = ((x * y + 2.0) / (1.5 - x) - np.float64(0.5) * x ** 2 + [1.0, 2.0, 3.0]).tanh()
z = (ag.relu(z) + abs(-x) * ag.sigmoid(x) + ag.exp(-x) @ x + ag.log(x * x + 1.0)).sum()
z.backward()
print("grads", x.grad.numpy().tobytes().hex(), y.grad.numpy().tobytes().hex())
'''

EXPRESSIONS = """
a + b
a - b
a * b
a / b
a ** b
a @ b
v @ v
m @ v
v @ m
m @ [1.0, 2.0, 3.0]
m @ 2.0
2.0 @ m
a + 2.0
2.0 + a
a - 2
2 - a
a * True
False * a
a / 4
4 / a
a ** 3
3 ** a
a + 10**400
10**400 - a
a + np.float64(1.5)
np.float64(1.5) + a
a * np.int64(3)
np.float32(2) * a
v + [1, 2, 3]
[1, 2, 3] - v
v * np.arange(3.0)
np.arange(3.0) * v
v + (1.0, 2.0, 3.0)
v + w
v * w
m - w
v / 0
0 / v
pow(a, 2, 3)
pow(2, a, 3)
a + None
None + a
a + 'x'
a * object()
f32 + v
f32 + 1.5
f32 * f32
i64 + 1
i64 * i64
i64 / 2
i64 + v
-a
-v
-i64
+a is a
abs(-v)
abs(i64)
a == 0.5
a != b
v < 2
2 < v
v <= 2.0
v > w
v >= v
v == True
a == None
a != 'x'
v < None
v < np.float64(2)
v == [1, 2, 3]
v == [1, 2]
i64 == 2
i64 == 2.5
f32 < 1e40
v == 10**400
mask & (v < 3)
~mask
ag.tanh(a)
ag.relu(v - 2)
ag.exp(v)
ag.log(-v)
ag.sqrt(v)
ag.sigmoid(v)
ag.gelu(v)
ag.softplus(v)
ag.sin(v)
ag.cos(v)
ag.abs(-v)
ag.neg(v)
ag.log1p(v)
ag.expm1(v)
ag.erf(v)
ag.exp(f32)
ag.tanh(2.0)
ag.tanh(np.float64(2.0))
ag.tanh([1.0])
ag.tanh(x=a)
ag.tanh()
ag.tanh(a, a)
ag.exp(i64)
ag.relu(i64)
ag.sum(m)
ag.sum(m, 0)
ag.sum(m, axis=1, keepdim=True)
ag.sum(m, None, True)
ag.sum(m, axis=())
ag.mean(m)
ag.max(m)
ag.min(m)
ag.logsumexp(m)
ag.sum(3.0)
ag.sum(i64)
ag.mean(i64)
ag.sum(ag.zeros(0))
ag.mean(ag.zeros(0))
ag.max(ag.zeros(0))
m.sum()
m.mean(axis=0)
m.max(1)
m.min()
m.logsumexp()
v.tanh()
v.relu()
v.exp()
v.log1p()
v.abs()
v.neg()
v.pow(2)
v.pow(w)
ag.Tensor.tanh(v)
ag.Tensor.tanh(2.0)
ag.Tensor.sum(m)
ag.add(a, b)
ag.add(1.0, a)
ag.add(1.0, 2.0)
ag.add(a, None)
ag.add(a, b=b)
ag.add(a)
ag.sub(v, 1)
ag.sub(1, v)
ag.mul(2, v)
ag.mul(v, [1, 2, 3])
ag.div(v, w)
ag.div(v, 2)
ag.pow(v, 2)
ag.pow(2, v)
freed + 1
1 + freed
freed + a
a * freed
-freed
abs(freed)
freed == 1
freed < a
ag.tanh(freed)
freed.sum()
freed.relu()
"""


def _run_parity(pure):
    env = dict(os.environ)
    env.pop("LIBAUTOGRAD_PURE_PYTHON", None)
    if pure:
        env["LIBAUTOGRAD_PURE_PYTHON"] = "1"
    env["AUTOGRAD_LIBRARY"] = ag.library_path()
    script = "import libautograd as ag; print('native', ag.native_enabled())\n" + PARITY_SCRIPT
    done = subprocess.run([sys.executable, "-c", script], input=EXPRESSIONS.strip(), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@native_only
def test_every_operator_and_op_gives_what_the_pure_path_gives():
    native, pure = _run_parity(pure=False), _run_parity(pure=True)
    assert native[0] == "native True" and pure[0] == "native False"
    assert len(native) == len(pure) == len(EXPRESSIONS.strip().splitlines()) + 2
    differ = [f"native: {n}\npure:   {p}" for n, p in zip(native[1:], pure[1:]) if n != p]
    assert not differ, "\n".join(differ)
    # the script reached the library's errors and the fallbacks, not only the fast path
    text = "\n".join(native)
    for expected in ("ShapeError: AG_ERR_SHAPE", "DTypeError: AG_ERR_DTYPE",
                     "InvalidHandleError: AG_ERR_INVALID_HANDLE", "unsupported operand type",
                     "OverflowError: int too large", "x must be a Tensor, not float",
                     "mask=True", "mask=False"):
        assert expected in text, expected


def test_pure_path_is_chosen_by_the_environment_variable():
    env = dict(os.environ, LIBAUTOGRAD_PURE_PYTHON="1", AUTOGRAD_LIBRARY=ag.library_path())
    done = subprocess.run([sys.executable, "-c",
                           "import libautograd as ag; print(ag.native_enabled()); "
                           "print(ag.native_status()); print(type(ag.tanh).__name__); "
                           "print(ag.Tensor.__mro__[1].__name__)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False"
    assert "LIBAUTOGRAD_PURE_PYTHON=1" in lines[1]
    assert lines[2:] == ["function", "_PythonBase"]


def test_native_status_names_the_path_in_use():
    status = ag.native_status()
    if ag.native_enabled():
        assert status.startswith("compiled") and "_native" in status
        assert type(ag.Tensor.__mro__[1]).__name__ == "type"
        assert ag.Tensor.__mro__[1].__name__ == "TensorBase"
    else:
        assert status.startswith("pure Python")


# ---- values by hand ------------------------------------------------------------------------------


def test_hand_derived_values_and_gradients():
    a = ag.tensor(2.0, requires_grad=True)
    b = ag.tensor(3.0, requires_grad=True)
    y = a * b + a / b - 2.0 ** a + b ** 2.0 - 1.0 / a + (-a) * 4 + abs(-b)
    assert y.item() == pytest.approx(6 + 2 / 3 - 4 + 9 - 0.5 - 8 + 3, rel=1e-15)
    y.backward()
    assert a.grad.item() == pytest.approx(3 + 1 / 3 - math.log(2) * 4 + 1 / 4 - 4, rel=1e-14)
    assert b.grad.item() == pytest.approx(2 - 2 / 9 + 6 + 1, rel=1e-14)
    x = ag.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    z = ag.tanh(x).sum() + x.relu().sum() + ag.sigmoid(x).mean() + ag.exp(x).max()
    z.backward()
    t = np.tanh([-1.0, 0.5, 2.0])
    s = 1 / (1 + np.exp([1.0, -0.5, -2.0]))
    want = (1 - t**2) + np.array([0.0, 1.0, 1.0]) + s * (1 - s) / 3 + np.array([0, 0, np.exp(2.0)])
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-14)
    assert (x > 0).tolist() == [0.0, 1.0, 1.0] and (x > 0).is_mask and not (x + 0).is_mask


def _grads(leaves):
    return [0.0 if leaf.grad is None else leaf.grad.item() for leaf in leaves]


def _b1_chain(leaves, cycles, tanh, relu):
    v = leaves[0]
    for i in range(cycles):
        v = v + leaves[i % 4]
        v = v * leaves[(i + 1) % 4]
        v = tanh(v)
        v = relu(v)
    return v


def _b1_forward_mode(values, cycles):
    """B1's chain in Python floats with its derivative by each leaf carried alongside (forward
    mode, dual numbers): the exact gradient up to rounding, with no step size to choose."""
    v, dv = values[0], [1.0 if k == 0 else 0.0 for k in range(4)]
    for i in range(cycles):
        j = i % 4
        v, dv = v + values[j], [d + (1.0 if k == j else 0.0) for k, d in enumerate(dv)]
        j = (i + 1) % 4
        v, dv = v * values[j], [d * values[j] + (v if k == j else 0.0) for k, d in enumerate(dv)]
        t = math.tanh(v)
        v, dv = t, [d * (1 - t * t) for d in dv]
        v, dv = (v, dv) if v > 0 else (0.0, [0.0] * 4)
    return v, dv


@pytest.mark.parametrize("cycles", [1, 7, 2500])
def test_b1_chain_gradients_are_exact(cycles, no_leaks):
    """B1's chain (bench/README.md) driven from Python, as bench B12 runs it."""
    values = [0.5, -0.3, 0.8, 1.2]
    leaves = [ag.tensor(x, requires_grad=True) for x in values]
    v = _b1_chain(leaves, cycles, ag.tanh, ag.relu)
    v.backward()
    want_v, want_grads = _b1_forward_mode(values, cycles)
    assert v.item() == pytest.approx(want_v, rel=1e-12, abs=1e-300)
    grads = _grads(leaves)  # a leaf the chain never reached has no .grad (B1's 1 cycle: x[3])
    for got, want in zip(grads, want_grads):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300)
    # the method forms give the same chain
    for leaf in leaves:
        leaf.zero_grad()
    u = _b1_chain(leaves, cycles, lambda t: t.tanh(), lambda t: t.relu())
    u.backward()
    assert _grads(leaves) == grads


def test_b1_chain_gradients_match_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    values = [0.5, -0.3, 0.8, 1.2]

    def chain(x):
        def body(i, v):
            v = v + x[i % 4]
            v = v * x[(i + 1) % 4]
            return jax.nn.relu(jnp.tanh(v))
        return jax.lax.fori_loop(0, 2500, body, x[0])

    want = jax.jit(jax.grad(chain))(jnp.asarray(values, dtype=jnp.float64))
    leaves = [ag.tensor(x, requires_grad=True) for x in values]
    _b1_chain(leaves, 2500, ag.tanh, ag.relu).backward()
    np.testing.assert_allclose(_grads(leaves), np.asarray(want),
                               rtol=1e-9)


def test_shape_mismatch_raises_the_libraries_error():
    with pytest.raises(ag.ShapeError) as caught:
        ag.tensor([1.0, 2.0, 3.0]) + ag.tensor([1.0, 2.0])
    assert caught.value.status_name == "AG_ERR_SHAPE"
    assert "ag_add: shapes [3] and [2] do not broadcast" in str(caught.value)
    with pytest.raises(ag.DTypeError, match="AG_ERR_DTYPE"):
        ag.tensor([1.0]) * ag.tensor([1.0], dtype=ag.float32)
    with pytest.raises(TypeError, match="unsupported operand"):
        ag.tensor(1.0) @ 2.0


# ---- no leaks ----------------------------------------------------------------------------------


def _many_ops(a, b, v, w):
    """Every form of the per-op path once: fast, fallback and failing."""
    c = a + b
    c = c * 2.0
    c = 1.0 - c
    c = c / b
    c = c ** 2
    c = 2 ** c
    c = -c
    c = abs(c)
    c = ag.tanh(c)
    c = c.relu()
    c = c.sum()
    c = ag.mean(v)
    c = ag.add(a, 1)
    c = a == b
    c = v < 2.0
    c = a + np.float64(1.0)
    c = v + [1.0, 2.0, 3.0]
    c = ag.sum(v, axis=0)
    c = ag.Tensor._wrap(ag.tensor(1.0).detach().handle, owned=False)
    for bad in (lambda: v + w, lambda: v < w, lambda: a + "x", lambda: ag.tanh(1.0),
                lambda: a + 10**400, lambda: a == 10**400):
        try:
            bad()
        except (ag.AutogradError, TypeError, OverflowError):
            pass
    return c


def test_no_handle_or_reference_leaks(no_leaks):
    a = ag.tensor(0.5, requires_grad=True)
    b = ag.tensor(2.0, requires_grad=True)
    v = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = ag.tensor([1.0, 2.0])
    operands = (a, b, v, w, ag.Tensor, ag.tanh, ag.Tensor.relu)
    _many_ops(a, b, v, w)  # warm-up: caches, the dicts of first use
    gc.collect()
    refs = [sys.getrefcount(o) for o in operands]
    handles = ag.live_handle_count()
    for _ in range(300):
        _many_ops(a, b, v, w)
    gc.collect()
    assert [sys.getrefcount(o) for o in operands] == refs
    assert ag.live_handle_count() == handles


def test_no_memory_growth_over_many_ops():
    a = ag.tensor(0.5, requires_grad=True)
    b = ag.tensor(2.0)
    v = ag.tensor([1.0, 2.0, 3.0])
    w = ag.tensor([1.0, 2.0])
    for _ in range(200):
        _many_ops(a, b, v, w)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(200):
            _many_ops(a, b, v, w)
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(2000):
            _many_ops(a, b, v, w)
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert second - first < 64 * 1024, f"Python memory grew by {second - first} bytes"


def test_results_and_dropped_graphs_free_their_handles(no_leaks):
    start = ag.live_handle_count()
    leaves = [ag.tensor(x, requires_grad=True) for x in (0.5, -0.3, 0.8, 1.2)]
    v = _b1_chain(leaves, 50, ag.tanh, ag.relu)
    assert ag.live_handle_count() == start + 5  # the leaves and v: intermediates went at once
    v.backward()
    del v
    assert ag.live_handle_count() == start + 4


# ---- Tensor subclasses, attributes, weak references ---------------------------------------------


def test_subclasses_attributes_and_weak_references(no_leaks):
    class Named(ag.Tensor):
        def describe(self):
            return f"{self.name}: {self.tolist()}"

    n = Named([1.0, 2.0], requires_grad=True)
    n.name = "weights"
    assert n.describe() == "weights: [1.0, 2.0]"
    assert vars(n)["name"] == "weights"
    out = n * 2 + n
    assert type(out) is ag.Tensor and out.tolist() == [3.0, 6.0]
    out.note = "a result"  # results have a __dict__ too
    assert out.note == "a result"
    out.sum().backward()
    assert n.grad.tolist() == [3.0, 3.0]
    ref = weakref.ref(n)
    del n
    gc.collect()
    assert ref() is None

    class Logged(ag.Tensor):
        def __add__(self, other):
            return "Logged.__add__"

        def __radd__(self, other):
            return "Logged.__radd__"

        def __eq__(self, other):
            return "Logged.__eq__"

        __hash__ = ag.Tensor.__hash__

    lg = Logged([1.0])
    assert lg + 1 == "Logged.__add__"
    assert ag.tensor([1.0]) + lg == "Logged.__radd__"  # a subclass's reflected form goes first
    assert (lg == 1) == "Logged.__eq__"
    assert (lg * 2).tolist() == [2.0]
    assert {lg: 1}[lg] == 1


def test_handle_attributes_behave_as_before():
    t = ag.tensor([1.0, 2.0])
    assert isinstance(t._handle, int) and t._handle == t.handle and t._owned is True
    assert t._mask is False and (t > 1)._mask is True
    borrowed = ag.Tensor._wrap(t.handle, owned=False)
    assert borrowed._owned is False and borrowed.tolist() == [1.0, 2.0]
    del borrowed
    assert t.tolist() == [1.0, 2.0]  # a borrowed wrapper does not free the handle
    t.free()
    assert t._owned is False
    with pytest.raises(ag.InvalidHandleError):
        t + 1


# ---- threads -------------------------------------------------------------------------------------


def test_operators_from_several_threads_agree():
    def work(k, out):
        x = ag.tensor(0.1 * (k + 1), requires_grad=True)
        v = x
        for _ in range(400):
            v = ag.tanh(v * 1.01 + x) - 0.5 * x
        v.backward()
        out[k] = (v.item(), x.grad.item())

    threaded = {}
    threads = [threading.Thread(target=work, args=(k, threaded)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = {}
    for k in range(4):
        work(k, alone)
    assert threaded == alone


# ---- the Ops in place of ops.py's functions -------------------------------------------------------


@native_only
def test_ops_keep_the_python_functions_name_doc_and_signature():
    for name in ("tanh", "relu", "sum", "add", "div", "pow"):
        fn = getattr(ag, name)
        assert type(fn).__name__ == "Op", name
        python = fn.__wrapped__
        assert inspect.isfunction(python)
        assert fn.__name__ == python.__name__ and fn.__doc__ == python.__doc__
        assert fn.__module__ == "libautograd.ops"
        assert inspect.signature(fn) == inspect.signature(python)
        assert pickle.loads(pickle.dumps(fn)) is fn
        assert name in repr(fn)
    assert ag.Tensor.tanh is ag.tanh and ag.Tensor.sum is ag.sum
    t = ag.tensor([0.5])
    assert t.tanh.__self__ is t and t.tanh().tolist() == [math.tanh(0.5)]


@native_only
def test_extension_refuses_misuse():
    with pytest.raises(TypeError, match="TensorBase"):
        _accel.native.TensorBase()
    with pytest.raises(RuntimeError):
        _accel.native.init({}, None)
    with pytest.raises(ValueError):
        _accel.native.Op("unary", 0, ag.tanh.__wrapped__)
    with pytest.raises(TypeError):
        ag.Tensor._wrap()
    with pytest.raises(OverflowError):
        ag.Tensor._wrap(-1)
    t = ag.tensor(1.0)
    with pytest.raises(AttributeError):
        del t._handle


def test_signature_letters_follow_the_prototypes():
    assert _accel._signature("ag_add") == "ott"
    assert _accel._signature("ag_add_scalar") == "otd"
    assert _accel._signature("ag_sum") == "otanb"
    assert _accel._signature("ag_tensor_full") == "oandi"
    assert _accel._signature("ag_tensor_dtype") == "It"
    if ag.native_enabled():
        for name, letters in _accel.native.SIGNATURES.items():
            assert _accel._signature(name) == letters, name
        assert re.fullmatch(r"[otdanbiI]+", _accel.native.UNARY_SIGNATURE)
