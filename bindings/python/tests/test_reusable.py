"""Reusable graphs from Python: Tensor.set_data, recomputable()/recompute, and compile (capture
once per signature, replay).

Expected values: hand derivation for the notebook example; for compiled functions, the same
Python function run eagerly on the same inputs, compared bit for bit (NumPy array equality):
a replay must run the same arithmetic in the same order as the eager function.
"""

import gc
import threading
from ctypes import CFUNCTYPE, POINTER, byref, c_int32, c_int64, c_uint64, c_void_p

import numpy as np
import pytest

import libautograd as ag
from libautograd._library import lib
from libautograd.errors import (ERR_ARGUMENT, ERR_CALLBACK, ERR_DTYPE, ERR_INVALID_HANDLE,
                                ERR_SHAPE, ERR_STATE, OK, last_error)

DTYPES = [ag.float64, ag.float32]


def same(a, b):
    """Bit-for-bit equality of two Tensors' values (dtype and shape included)."""
    x, y = a.numpy(), b.numpy()
    return (x.dtype == y.dtype and x.shape == y.shape
            and x.tobytes() == y.tobytes())


# ---- set_data, recomputable, recompute ----------------------------------------------------


def test_notebook_example_recomputes_in_place(no_leaks):
    """z1 = x + y, z2 = z1 * y at x = 3, y = 5; x changes; re-evaluate; values and dz2/dy
    follow without rebuilding. By hand: z2 = (x + y) y, dz2/dx = y, dz2/dy = x + 2y."""
    with ag.recomputable():
        x = ag.tensor(3.0, requires_grad=True)
        y = ag.tensor(5.0, requires_grad=True)
        z1 = x + y
        z2 = z1 * y
    assert z2.item() == 40.0
    gx, gy = ag.grad(z2, [x, y], retain_graph=True)
    assert (gx.item(), gy.item()) == (5.0, 13.0)
    with ag.no_grad():
        assert x.set_data(10.0) is x
    assert z2.recompute() is z2
    assert (z1.item(), z2.item()) == (15.0, 75.0)
    gx, gy = ag.grad(z2, [x, y], retain_graph=True)
    assert (gx.item(), gy.item()) == (5.0, 20.0)
    # any node with respect to any node: dz2/dz1 = y
    assert ag.grad(z2, z1, retain_graph=True)[0].item() == 5.0
    # y too, through the module-level function
    with ag.no_grad():
        y.set_data([2.0])  # a flat sequence of numel elements
    assert ag.recompute(z2) is z2
    assert (z1.item(), z2.item()) == (12.0, 24.0)
    gx, gy = ag.grad(z2, [x, y], retain_graph=True)
    assert (gx.item(), gy.item()) == (2.0, 14.0)


def test_a_stale_graph_is_refused_until_recomputed(no_leaks):
    with ag.recomputable():
        x = ag.tensor([1.0, 2.0], requires_grad=True)
        y = ag.tensor([3.0, 4.0], requires_grad=True)
        z = (x * y).sum()
    with ag.no_grad():
        y.set_data(np.array([5.0, 6.0]))
    # mul saved y for x's gradient: its values changed under the graph
    with pytest.raises(ag.StateError):
        ag.grad(z, [x, y], retain_graph=True)
    z.recompute()
    assert z.item() == 1 * 5 + 2 * 6
    gx, gy = ag.grad(z, [x, y], retain_graph=True)
    assert gx.tolist() == [5.0, 6.0] and gy.tolist() == [1.0, 2.0]


def test_recompute_needs_a_recomputable_graph(no_leaks):
    x = ag.tensor(3.0, requires_grad=True)
    z = x.exp()
    with pytest.raises(ag.StateError, match="recorded without its forward"):
        z.recompute()
    with ag.recomputable():
        with ag.recomputable(False):  # restores True on exit
            w = x.sin()
        v = x.cos()
    with pytest.raises(ag.StateError, match="recorded without its forward"):
        ag.recompute(w)
    assert ag.recompute(v) is v
    after = x * 2.0  # recorded after the block: the setting was restored to off
    with pytest.raises(ag.StateError, match="recorded without its forward"):
        after.recompute()
    # a leaf has no history: left as it is
    assert ag.recompute(x).item() == 3.0


def test_recomputable_as_a_decorator_and_restored_on_exceptions(no_leaks):
    x = ag.tensor(2.0, requires_grad=True)

    @ag.recomputable()
    def build():
        return x * x

    z = build()
    with ag.no_grad():
        x.set_data(3.0)
    assert z.recompute().item() == 9.0
    with pytest.raises(KeyError):
        with ag.recomputable():
            raise KeyError("boom")
    with pytest.raises(ag.StateError):
        (x * x).recompute()
    with pytest.raises(TypeError):
        ag.recomputable(1)


def test_set_data_shapes_dtypes_and_rules(no_leaks):
    t = ag.zeros(2, 3)
    t.set_data([[1, 2, 3], [4, 5, 6]])  # ints: converted by NumPy
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    t.set_data(np.arange(6.0)[::-1])  # flat, non-contiguous
    assert t.numpy().ravel().tolist() == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    t.set_data(np.arange(6.0, dtype=">f8").reshape(2, 3))  # big-endian
    assert t.numpy().ravel().tolist() == list(range(6))
    # float64 data into a float32 tensor: rounded by the library as NumPy rounds
    f = ag.zeros(3, dtype=ag.float32)
    data = np.array([0.1, 1 / 3, 1e-40])
    f.set_data(data)
    assert np.array_equal(f.numpy(), data.astype(np.float32))
    f.set_data(ag.tensor([1.5, 2.5, 3.5], dtype=ag.float64))
    assert f.numpy().tolist() == [1.5, 2.5, 3.5]
    with pytest.raises(ValueError, match="shape"):
        t.set_data(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        t.set_data(np.zeros(5))
    with pytest.raises(TypeError):
        t.set_data(["a", "b"])
    # the rules of copy_: a leaf requiring grad only under no_grad; never a recorded result
    w = ag.ones(2, requires_grad=True)
    with pytest.raises(ag.StateError):
        w.set_data([1.0, 2.0])
    with ag.no_grad():
        w.set_data([1.0, 2.0])
    assert w.tolist() == [1.0, 2.0]
    r = w * 2.0
    with pytest.raises(ag.StateError):
        with ag.no_grad():
            r.set_data([0.0, 0.0])
    # the raw call: a count other than numel, data NULL
    assert lib.ag_tensor_set_data(t.handle, None, 6, 2) == ERR_ARGUMENT
    assert "NULL" in last_error()
    buf = np.zeros(5)
    assert lib.ag_tensor_set_data(t.handle, buf.ctypes.data, 5, 2) == ERR_ARGUMENT
    assert lib.ag_tensor_set_data(t.handle, buf.ctypes.data, 6, 7) in (ERR_ARGUMENT, ERR_DTYPE)


# ---- compile: bit-identical to eager ------------------------------------------------------


def _grads_fn(x, w, scale):
    """A forward with several op kinds, and its gradients by ag.grad, inside the function."""
    h = ag.tanh(x @ w) * ag.sigmoid(x.sum(axis=1, keepdim=True))
    y = ag.softmax(h * scale, axis=-1)
    loss = (y ** 2).mean() + ag.logsumexp(h, axis=0).sum() + ag.gelu(h).var()
    gx, gw = ag.grad(loss, [x, w])
    return loss, gx, gw


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compiled_function_with_grad_matches_eager_bit_for_bit(dtype, rng, no_leaks):
    def inputs():
        x = ag.tensor(rng.normal(size=(4, 3)), dtype=dtype, requires_grad=True)
        w = ag.tensor(rng.normal(size=(3, 5)), dtype=dtype, requires_grad=True)
        return x, w

    f = ag.compile(_grads_fn)
    for call in range(6):
        x, w = inputs()
        got = f(x, w, 0.7)
        # the eager function on copies of the same inputs
        xe, we = ag.tensor(x.numpy(), requires_grad=True), ag.tensor(w.numpy(), requires_grad=True)
        want = _grads_fn(xe, we, 0.7)
        assert isinstance(got, tuple) and len(got) == 3
        for g, e in zip(got, want):
            assert same(g, e), (call, g.numpy(), e.numpy())
            assert not g.requires_grad
    info = f.cache_info()
    # call 1 runs fn with a guessed output count (1): its results answer it, call 2 captures
    assert (info.hits, info.misses, info.captures, info.size) == (4, 2, 1, 1)
    stats = f.function_info(x, w, 0.7)
    assert stats["recorded_steps"] >= stats["live_steps"] > 0 and stats["instructions"] > 0
    del f, got
    gc.collect()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_elementwise_chains_replay_bit_for_bit(dtype, no_leaks):
    """Tensors large enough for the kernels' multithreaded paths (eager and replayed)."""
    r = np.random.default_rng(17)
    b = ag.tensor(r.normal(size=(1, 512)), dtype=dtype)

    def f(x):
        y = ag.tanh(x * 1.5 + b) * ag.sigmoid(x) - ag.exp(-x * x) / (1.0 + x * x)
        loss = (ag.softplus(y) * x).sum() + ag.gelu(y).mean()
        return loss, ag.grad(loss, x)[0]

    g = ag.compile(f)
    for _ in range(3):
        data = r.normal(size=(600, 512))
        got = g(ag.tensor(data, dtype=dtype, requires_grad=True))
        want = f(ag.tensor(data, dtype=dtype, requires_grad=True))
        assert all(same(a, e) for a, e in zip(got, want))
    assert g.cache_info().hits == 1


def _mlp_params(dtype, seed=3):
    r = np.random.default_rng(seed)
    shapes = [(8, 5), (8,), (3, 8), (3,)]
    return [ag.tensor(r.normal(0, 0.5, size=s), dtype=dtype, requires_grad=True) for s in shapes]


def _mlp_loss(p, x, y):
    h = ag.relu(ag.linear(x, p[0], p[1]))
    return ag.mse_loss(ag.tanh(ag.linear(h, p[2], p[3])), y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("make_opt", [lambda p: ag.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: ag.Adam(p, lr=0.01)], ids=["sgd", "adam"])
def test_training_loop_by_replay_equals_the_eager_loop(dtype, make_opt, no_leaks):
    r = np.random.default_rng(11)
    batches = [(r.normal(size=(4, 5)), r.normal(size=(4, 3))) for _ in range(8)]

    def run(compiled):
        params = _mlp_params(dtype)
        opt = make_opt(params)

        def step(x, y):
            opt.zero_grad()
            loss = _mlp_loss(params, x, y)
            loss.backward()
            opt.step()
            return loss

        f = ag.compile(step) if compiled else step
        losses = [f(ag.tensor(x, dtype=dtype), ag.tensor(y, dtype=dtype)) for x, y in batches]
        if compiled:
            assert f.cache_info().captures == 1 and f.cache_info().hits == len(batches) - 1
        opt.close()
        return [loss.numpy() for loss in losses], [p.numpy() for p in params]

    eager_losses, eager_params = run(False)
    replay_losses, replay_params = run(True)
    for k, (a, b) in enumerate(zip(replay_losses, eager_losses)):
        assert a.dtype == b.dtype and np.array_equal(a, b), (k, a, b)
    for a, b in zip(replay_params, eager_params):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # training moved the weights: a test that could not tell steps apart would not see this
    assert not np.array_equal(replay_params[0], _mlp_params(dtype)[0].numpy())


def test_parameters_are_read_per_call_constants_and_control_flow_are_frozen(no_leaks):
    w = ag.tensor([1.0, 2.0, 3.0])
    runs = []

    def f(x):
        runs.append(1)
        c = ag.tensor([10.0, 20.0, 30.0])  # a constant made inside: capture-time values
        if x.sum().item() > 0:  # Python control flow: frozen at the capture's path
            return x * w + c
        return x * w - c

    g = ag.compile(f)
    x = ag.tensor([1.0, 1.0, 1.0])
    assert g(x).tolist() == [11.0, 22.0, 33.0]  # captured here (one output, as guessed)
    w.set_data([2.0, 2.0, 2.0])  # a parameter: read where it is at each call
    assert g(ag.tensor([1.0, 2.0, 3.0])).tolist() == [12.0, 24.0, 36.0]
    # a negative sum would take the other branch eagerly; the replay keeps the captured one
    assert g(ag.tensor([-1.0, -1.0, -1.0])).tolist() == [8.0, 18.0, 28.0]
    assert len(runs) == 1
    assert g.cache_info() == ag.CacheInfo(hits=2, misses=1, captures=1, size=1)


def test_cache_per_signature(no_leaks):
    runs = []

    def f(x, power, *, shift=0.0):
        runs.append((x.shape, power, shift))
        return (x ** power + shift).sum()

    g = ag.compile(f)
    a = ag.tensor([1.0, 2.0])
    assert g(a, 2).item() == 5.0
    assert g(ag.tensor([3.0, 4.0]), 2).item() == 25.0  # hit
    assert g(ag.tensor([1.0, 2.0, 3.0]), 2).item() == 14.0  # new shape: new capture
    assert g(ag.tensor([1.0, 2.0], dtype=ag.float32), 2).item() == 5.0  # new dtype
    assert g(ag.tensor([1.0, 2.0], requires_grad=True), 2).item() == 5.0  # requires_grad
    assert g(a, 3).item() == 9.0  # another non-Tensor argument
    assert g(a, 3.0).item() == 9.0  # 3.0 is not 3 (types are part of the key)
    assert g(a, 2, shift=1.0).item() == 7.0  # keyword arguments too
    assert g(x=a, power=2).item() == 5.0  # a Tensor by keyword
    with ag.no_grad():
        assert g(a, 2).item() == 5.0  # grad mode is part of the key
    assert len(runs) == 9
    assert g(ag.tensor([5.0, 6.0, 7.0]), 2).item() == 110.0  # hit of the second capture
    assert g.cache_info() == ag.CacheInfo(hits=2, misses=9, captures=9, size=9)
    assert g.function_info(a, 2)["live_steps"] > 0
    assert g.function_info(ag.tensor([1.0]), 2) is None
    with pytest.raises(TypeError, match="hashable"):
        g(a, [2])
    with pytest.raises(TypeError, match="hashable"):
        g(a, np.array(2.0))
    with pytest.raises(TypeError, match="Tensors inside containers"):
        g((a,), 2)
    g.clear_cache()
    assert g.cache_info().size == 0
    assert g(a, 2).item() == 5.0 and len(runs) == 10


def test_output_structures_and_changing_output_counts(no_leaks):
    """fn's results come back in its structure; a call whose fn returns another number of
    outputs than the last capture is answered by its own run (its effects happen once), and
    the next call with that signature captures."""
    p = ag.tensor([1.0, 2.0], requires_grad=True)
    opt = ag.SGD([p], lr=0.5)
    runs = []

    def step(x):
        runs.append(1)
        opt.zero_grad()
        loss = (p * x).sum()
        loss.backward()
        opt.step()
        return [loss, p * 1.0]

    g = ag.compile(step)
    x = ag.tensor([1.0, -1.0])
    outs = [g(x) for _ in range(4)]
    assert all(isinstance(o, list) and len(o) == 2 for o in outs)
    assert len(runs) == 2  # the first call learned the count, the second captured
    # four SGD steps of p -= 0.5 * x, whichever way each call ran
    assert p.tolist() == [1.0 - 2.0, 2.0 + 2.0]
    assert [o[0].item() for o in outs] == [-1.0, -2.0, -3.0, -4.0]
    assert [o[1].tolist() for o in outs] == [[0.5, 2.5], [0.0, 3.0], [-0.5, 3.5], [-1.0, 4.0]]
    opt.close()

    import collections
    Pair = collections.namedtuple("Pair", "a b")
    h = ag.compile(lambda t: Pair(t + 1.0, t * 2.0))
    for _ in range(3):
        r = h(ag.tensor([1.0]))
        assert isinstance(r, Pair) and (r.a.item(), r.b.item()) == (2.0, 2.0)
    # an input returned as it is: a copy, not the placeholder
    ident = ag.compile(lambda t: t)
    for v in (1.0, 2.0, 3.0):
        assert ident(ag.tensor([v])).tolist() == [v]
    mask = ag.compile(lambda t: t > 0)
    for _ in range(2):
        m = mask(ag.tensor([1.0, -1.0]))
        assert m.is_mask and m.tolist() == [1.0, 0.0]


def test_call_into_writes_existing_tensors(no_leaks):
    w = ag.tensor([[1.0, 2.0], [3.0, 4.0]])
    f = ag.compile(lambda x: (x @ w, (x * x).sum()))
    out = [ag.zeros(1, 2), ag.zeros(())]
    for k, v in enumerate([1.0, 2.0, 3.0]):
        x = ag.tensor([[v, -v]])
        assert f.call_into(out, x) is out
        a, b = f(x) if k else (None, None)
        assert out[0].tolist() == [[v - 3 * v, 2 * v - 4 * v]] and out[1].item() == 2 * v * v
        if a is not None:
            assert same(out[0], a) and same(out[1], b)
    with pytest.raises(ag.ShapeError):
        f.call_into([ag.zeros(2, 2), ag.zeros(())], ag.tensor([[1.0, 1.0]]))
    with pytest.raises(ag.StateError):
        f.call_into([ag.zeros(1, 2, requires_grad=True), ag.zeros(())], ag.tensor([[1.0, 1.0]]))
    g = ag.compile(lambda x: x * 2.0)
    with pytest.raises(ValueError):  # a call that captures checks the same in Python
        g.call_into(ag.zeros(3), ag.tensor([1.0, 2.0]))
    assert g.call_into(ag.zeros(2), ag.tensor([1.0, 2.0])).tolist() == [2.0, 4.0]
    assert g.cache_info().captures == 1


def test_compile_as_a_decorator_and_on_methods(no_leaks):
    class Model:
        def __init__(self, scale):
            self.w = ag.tensor([scale, scale])

        @ag.compile
        def forward(self, x):
            return (x * self.w).sum()

    a, b = Model(2.0), Model(3.0)
    for v in (1.0, 2.0):
        assert a.forward(ag.tensor([v, v])).item() == 4.0 * v
        assert b.forward(ag.tensor([v, v])).item() == 6.0 * v
    # one compiled function for the class, one capture per instance (self is in the key)
    assert Model.forward.cache_info() == ag.CacheInfo(hits=2, misses=2, captures=2, size=2)
    assert Model.forward.__name__ == "forward"
    Model.forward.clear_cache()


def test_concurrent_calls_give_each_caller_its_result(no_leaks):
    w = ag.tensor(np.linspace(-1, 1, 12).reshape(3, 4))
    f = ag.compile(lambda x: ag.tanh(x @ w).sum(axis=0))
    f(ag.zeros(2, 3))  # captured
    r = np.random.default_rng(5)
    data = [r.normal(size=(2, 3)) for _ in range(4 * 25)]
    want = [ag.tanh(ag.tensor(d) @ w).sum(axis=0).numpy() for d in data]
    got = [None] * len(data)

    def worker(k):
        for i in range(k, len(data), 4):
            got[i] = f(ag.tensor(data[i])).numpy()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


# ---- errors -----------------------------------------------------------------------------


def test_an_exception_in_fn_surfaces_from_the_capturing_call_chained(no_leaks):
    class Boom(Exception):
        pass

    def f(x):
        y = x * 2.0
        raise Boom("inside fn")

    g = ag.compile(f)
    with pytest.raises(ag.CallbackError) as info:
        g(ag.tensor([1.0]))
    assert isinstance(info.value.__cause__, Boom)
    assert info.value.status == ERR_CALLBACK
    assert g.cache_info().size == 0
    bad = ag.compile(lambda x: 3.0)
    with pytest.raises(ag.CallbackError) as info:
        bad(ag.tensor([1.0]))
    assert isinstance(info.value.__cause__, TypeError)
    empty = ag.compile(lambda x: ())
    with pytest.raises(ag.CallbackError) as info:
        empty(ag.tensor([1.0]))
    assert isinstance(info.value.__cause__, ValueError)


def test_a_hook_inside_a_captured_backward_is_refused(no_leaks):
    p = ag.tensor([1.0, 2.0], requires_grad=True)
    handle = p.register_hook(lambda g: g * 2.0)

    def f(x):
        loss = (p * x).sum()
        return ag.grad(loss, p)[0]

    g = ag.compile(f)
    # ag.grad inside fn is refused by the capture; fn raises that, so the call raises
    # CallbackError caused by it (as the C API returns AG_ERR_CALLBACK quoting it)
    with pytest.raises(ag.CallbackError, match="hook") as info:
        g(ag.tensor([1.0, 1.0]))
    assert isinstance(info.value.__cause__, ag.StateError)
    assert "cannot be replayed" in str(info.value.__cause__)
    assert g.cache_info().captures == 0
    handle.remove()
    assert g(ag.tensor([1.0, 1.0])).tolist() == [1.0, 1.0]


def test_captures_and_replays_inside_a_capture_are_refused(no_leaks):
    inner = ag.compile(lambda x: x * 3.0)
    inner(ag.tensor([1.0]))  # captured
    outer = ag.compile(lambda x: inner(x) + 1.0)
    with pytest.raises(ag.CallbackError) as info:
        outer(ag.tensor([1.0]))
    assert isinstance(info.value.__cause__, ag.StateError)
    assert "cannot be called inside a capture" in str(info.value.__cause__)
    fresh = ag.compile(lambda x: x * 5.0)
    outer2 = ag.compile(lambda x: fresh(x) + 1.0)
    with pytest.raises(ag.CallbackError) as info:
        outer2(ag.tensor([1.0]))
    assert isinstance(info.value.__cause__, ag.StateError)
    assert "nested" in str(info.value.__cause__)
    assert inner(ag.tensor([2.0])).item() == 6.0  # still usable outside


_RAW_FN = CFUNCTYPE(c_int32, POINTER(c_uint64), c_int64, POINTER(c_uint64), c_int64, c_void_p)


def test_wrong_inputs_through_the_raw_api(no_leaks):
    """ag_capture / ag_function_call driven directly: shapes and dtypes are fixed per capture."""

    @_RAW_FN
    def double(outputs, noutputs, inputs, ninputs, user_data):
        out = c_uint64(0)
        status = lib.ag_mul_scalar(byref(out), inputs[0], 2.0)
        outputs[0] = out.value
        return status

    x = ag.tensor([[1.0, 2.0, 3.0]])
    f = c_uint64(0)
    ins = (c_uint64 * 1)(x.handle)
    assert lib.ag_capture(byref(f), double, ins, 1, 1, None) == OK
    outs = (c_uint64 * 1)()

    def call(t, n=1, nout=1):
        return lib.ag_function_call(outs, nout, f.value, (c_uint64 * 1)(t.handle), n)

    assert call(ag.tensor([[4.0, 5.0, 6.0]])) == OK
    got = ag.Tensor._wrap(outs[0])
    assert got.tolist() == [[8.0, 10.0, 12.0]]
    assert call(ag.tensor([1.0, 2.0, 3.0])) == ERR_SHAPE
    assert "shapes are fixed per capture" in last_error()
    assert call(ag.tensor([[1.0, 2.0, 3.0]], dtype=ag.float32)) == ERR_DTYPE
    assert call(x, n=0) == ERR_ARGUMENT
    assert call(x, nout=2) == ERR_ARGUMENT
    info = (c_int64 * 8)()
    assert lib.ag_function_info(info, 8, f.value) == OK and info[0] >= 1
    assert lib.ag_function_free(f.value) == OK
    assert call(x) == ERR_INVALID_HANDLE
    assert lib.ag_function_free(f.value) == ERR_INVALID_HANDLE
    # a capture function that fails, and one that writes no handle
    fail = _RAW_FN(lambda o, no, i, ni, u: 3)
    assert lib.ag_capture(byref(f), fail, ins, 1, 1, None) == ERR_CALLBACK
    nothing = _RAW_FN(lambda o, no, i, ni, u: 0)
    assert lib.ag_capture(byref(f), nothing, ins, 1, 1, None) == ERR_CALLBACK
    assert "wrote no tensor handle" in last_error()


def test_compiled_functions_are_freed_with_the_compiled_object():
    gc.collect()
    start = ag.live_handle_count()
    f = ag.compile(lambda x: (x * x).sum())
    for v in (1.0, 2.0):
        f(ag.tensor([v]))
    f(ag.tensor([1.0, 2.0]))
    assert f.cache_info().size == 2
    gc.collect()
    assert ag.live_handle_count() == start + 2  # the two captured functions
    del f
    gc.collect()
    assert ag.live_handle_count() == start
