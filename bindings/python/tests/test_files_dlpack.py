"""safetensors files, checkpoints and DLPack from Python (NumPy only; the PyPI safetensors package
and PyTorch are checked in Tests/reference/interop.py, the reference part of the test command).

Expected values come from NumPy arrays built here and from hand-written file bytes."""

import gc
import json
import struct

import numpy as np
import pytest

import libautograd as ag


# ---- DLPack: memory is shared, shown by pointers and by writes ----

_AG = {np.float32: ag.float32, np.float64: ag.float64, np.int64: ag.int64, np.bool_: ag.bool_}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_numpy_from_dlpack_shares_the_tensors_memory(dtype):
    t = ag.tensor(np.arange(6).reshape(2, 3).astype(dtype), dtype=_AG[dtype])
    a = np.from_dlpack(t)
    assert a.shape == (2, 3) and a.dtype == dtype
    assert a.ctypes.data == t.data_ptr() != 0
    np.testing.assert_array_equal(a, np.arange(6).reshape(2, 3).astype(dtype))


def test_writes_are_seen_both_ways_through_numpy_from_dlpack():
    t = ag.tensor([1.0, 2.0, 3.0])
    a = np.from_dlpack(t)
    a[1] = 20.0                      # NumPy writes: the tensor sees it
    assert t.tolist() == [1.0, 20.0, 3.0]
    t.copy_(ag.tensor([7.0, 8.0, 9.0]))   # the library writes: the array sees it
    assert a.tolist() == [7.0, 8.0, 9.0]


def test_the_exported_memory_outlives_the_tensor():
    t = ag.tensor(np.linspace(0, 1, 1000))
    a = np.from_dlpack(t)
    del t
    gc.collect()
    np.testing.assert_array_equal(a, np.linspace(0, 1, 1000))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_from_dlpack_of_a_numpy_array_shares_its_memory(dtype):
    a = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    t = ag.from_dlpack(a)
    assert t.shape == (3, 4) and t.data_ptr() == a.ctypes.data
    np.testing.assert_array_equal(t.numpy(), a)


def test_from_dlpack_writes_and_lifetime():
    a = np.zeros(4)
    t = ag.from_dlpack(a)
    a[2] = 5.0
    assert t.tolist() == [0.0, 0.0, 5.0, 0.0]
    t.copy_(ag.tensor([1.0, 2.0, 3.0, 4.0]))
    assert a.tolist() == [1.0, 2.0, 3.0, 4.0]
    del a
    gc.collect()                     # the tensor keeps the array alive
    assert t.tolist() == [1.0, 2.0, 3.0, 4.0]
    u = t * 2                        # and computes with it
    assert u.tolist() == [2.0, 4.0, 6.0, 8.0]


def test_a_round_trip_through_dlpack_keeps_the_pointer():
    t = ag.tensor([[1.5, 2.5]])
    u = ag.from_dlpack(t)
    assert u.data_ptr() == t.data_ptr()
    v = ag.from_dlpack(np.from_dlpack(t))
    assert v.data_ptr() == t.data_ptr()


def test_an_unconsumed_capsule_is_freed_and_a_consumed_one_refused():
    t = ag.tensor([1.0, 2.0])
    before = ag.live_handle_count()
    for _ in range(100):
        t.__dlpack__(max_version=(1, 0))   # never consumed: the capsule's destructor frees it
        t.__dlpack__()
    capsule = t.__dlpack__(max_version=(1, 1))
    u = ag.from_dlpack(capsule)
    with pytest.raises(TypeError, match="consumed already"):
        ag.from_dlpack(capsule)
    del u
    gc.collect()
    assert ag.live_handle_count() == before


def test_a_write_from_outside_is_caught_by_the_version_counter():
    a = np.array([1.0, 2.0, 3.0])
    x = ag.from_dlpack(a)
    x.requires_grad = True
    y = (x * x).sum()                # saves x
    v = x._version
    a[0] = 10.0
    x.mark_modified()
    assert x._version == v + 1
    with pytest.raises(ag.StateError, match="modified|in place|version"):
        y.backward()


def test_layouts_that_cannot_be_shared_are_refused_clearly():
    a = np.arange(12.0).reshape(3, 4)
    with pytest.raises(ag.ArgumentError, match="contiguous"):
        ag.from_dlpack(a[:, ::2])
    with pytest.raises(ag.ArgumentError, match="contiguous"):
        ag.from_dlpack(a.T)
    t = ag.from_dlpack(a[:, ::2], copy=True)   # a copy when asked for
    np.testing.assert_array_equal(t.numpy(), a[:, ::2])
    with pytest.raises(ag.DTypeError):
        ag.from_dlpack(np.zeros(3, dtype=np.float16))
    a[0, 0] = 100.0
    assert t.numpy()[0, 0] == 0.0     # the copy is not shared


def test_a_read_only_array_imports_read_only():
    a = np.arange(3.0)
    a.flags.writeable = False
    t = ag.from_dlpack(a)
    assert t.data_ptr() == a.ctypes.data
    with pytest.raises(ag.StateError, match="read-only"):
        t.copy_(ag.tensor([5.0, 5.0, 5.0]))
    assert a.tolist() == [0.0, 1.0, 2.0]


def test_array_copy_false_shares():
    t = ag.tensor([3.0, 4.0])
    a = np.asarray(t, copy=False) if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else np.from_dlpack(t)
    assert a.ctypes.data == t.data_ptr()
    b = np.asarray(t)                  # the default copies
    assert b.ctypes.data != t.data_ptr()


# ---- safetensors ----


def _file_bytes(header, data=b""):
    """A safetensors file built by hand: 8-byte little-endian length, JSON header, data."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_a_hand_built_file_loads():
    data = struct.pack("<3f", 1.5, -2.0, 0.25) + struct.pack("<2q", -7, 2**40)
    raw = _file_bytes({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                       "i": {"dtype": "I64", "shape": [1, 2], "data_offsets": [12, 28]},
                       "__metadata__": {"k": "v é"}}, data)
    with ag.SafetensorsFile.from_bytes(raw) as f:
        assert f.keys() == ["a", "i"]
        assert f.metadata() == {"k": "v é"}
        assert f.info("a") == (ag.float32, (3,))
        assert f.get_tensor("a").tolist() == [1.5, -2.0, 0.25]
        assert f.get_tensor("i").tolist() == [[-7, 2**40]]


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"w": ag.tensor(rng.standard_normal((3, 4))), "h": ag.tensor(rng.standard_normal(5).astype(np.float32)),
               "idx": ag.tensor(np.array([3, -1, 2**62])), "scalar": ag.tensor(2.5), "empty": ag.zeros(0, 3)}
    path = tmp_path / "m.safetensors"
    ag.save_safetensors(tensors, path, metadata={"epoch": "3", "note": "quote \" and \\ and\nnewline"})
    back = ag.load_safetensors(path)
    assert list(back) == list(tensors)
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and back[k].shape == tensors[k].shape
        np.testing.assert_array_equal(back[k].numpy(), tensors[k].numpy())
    with ag.safe_open(path) as f:
        assert f.metadata() == {"epoch": "3", "note": "quote \" and \\ and\nnewline"}
    # The header is JSON any reader parses.
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    assert header["w"] == {"dtype": "F64", "shape": [3, 4], "data_offsets": header["w"]["data_offsets"]}


def test_bad_files_are_errors_not_crashes(tmp_path):
    good = _file_bytes({"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 16)
    bad = [good[:5], good[:-1], b"\xff" * 8 + b"{}", _file_bytes({"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16),
           _file_bytes({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 16),
           struct.pack("<Q", 2) + b"{]"]
    for raw in bad:
        with pytest.raises(ag.FormatError):
            ag.SafetensorsFile.from_bytes(raw)
    with pytest.raises(ag.FileError, match="no-such"):
        ag.load_safetensors(tmp_path / "no-such.safetensors")
    with pytest.raises(ag.FileError):
        ag.save_safetensors({"a": ag.tensor([1.0])}, tmp_path / "no-dir" / "x.safetensors")


# ---- checkpoints: a resumed training equals the uninterrupted one, bit for bit ----


def _train(steps, w, b, opt, x, y, start=0):
    for k in range(start, steps):
        opt.zero_grad()
        loss = (((x @ w + b) - y) ** 2).mean()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("make", [lambda p: ag.Adam(p, lr=0.05), lambda p: ag.AdamW(p, lr=0.05, weight_decay=0.1),
                                  lambda p: ag.SGD(p, lr=0.05, momentum=0.9, nesterov=True)])
def test_a_resumed_training_equals_the_uninterrupted_one(tmp_path, make):
    rng = np.random.default_rng(1)
    x, y = ag.tensor(rng.standard_normal((16, 3)).astype(np.float32)), ag.tensor(rng.standard_normal((16, 2)).astype(np.float32))
    w0, b0 = rng.standard_normal((3, 2)).astype(np.float32), np.zeros(2, np.float32)

    w, b = ag.tensor(w0, requires_grad=True), ag.tensor(b0, requires_grad=True)
    opt = make([w, b])
    _train(20, w, b, opt, x, y)
    whole = (w.numpy().tobytes(), b.numpy().tobytes())

    w, b = ag.tensor(w0, requires_grad=True), ag.tensor(b0, requires_grad=True)
    opt = make([w, b])
    _train(8, w, b, opt, x, y)
    path = tmp_path / "ckpt.safetensors"
    ag.save_checkpoint(path, {"w": w, "b": b}, opt, metadata={"step": "8"})
    del w, b, opt

    w, b = ag.tensor(np.zeros_like(w0), requires_grad=True), ag.tensor(np.ones_like(b0), requires_grad=True)
    opt = make([w, b])
    meta = ag.load_checkpoint(path, {"w": w, "b": b}, opt)
    assert meta["step"] == "8"
    _train(20, w, b, opt, x, y, start=8)
    assert (w.numpy().tobytes(), b.numpy().tobytes()) == whole


def test_a_checkpoint_into_another_optimizer_or_shape_changes_nothing(tmp_path):
    w = ag.tensor([[1.0, 2.0]], requires_grad=True)
    opt = ag.Adam([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    path = tmp_path / "c.safetensors"
    ag.save_checkpoint(path, {"w": w}, opt)
    v = ag.tensor([[5.0, 6.0]], requires_grad=True)
    with pytest.raises(ag.ArgumentError, match="adam"):
        ag.load_checkpoint(path, {"w": v}, ag.SGD([v], lr=0.1, momentum=0.9))
    assert v.tolist() == [[5.0, 6.0]]
    u = ag.tensor([5.0, 6.0], requires_grad=True)
    with pytest.raises(ag.ShapeError):
        ag.load_checkpoint(path, {"w": u})
    assert u.tolist() == [5.0, 6.0]
    with pytest.raises(ag.ArgumentError, match="autograd."):
        ag.save_checkpoint(path, {"w": w}, opt, metadata={"autograd.mine": "x"})
