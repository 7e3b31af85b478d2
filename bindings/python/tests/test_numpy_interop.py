"""from_numpy / numpy(): values and dtype kept, one copy each way, fresh memory, any layout."""

import numpy as np
import pytest

import libautograd as ag


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_keeps_values_and_dtype(dtype, rng):
    a = rng.normal(size=(3, 4, 5)).astype(dtype)
    t = ag.from_numpy(a)
    assert t.dtype.numpy == np.dtype(dtype)
    assert t.dtype is (ag.float32 if dtype == np.float32 else ag.float64)
    assert t.shape == (3, 4, 5) and t.ndim == 3 and t.size == 60 and t.numel() == 60
    assert len(t) == 3
    back = t.numpy()
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, a)


def test_results_are_fresh_arrays(rng):
    a = rng.normal(size=(4, 3))
    t = ag.from_numpy(a)
    a[0, 0] = 1234.5  # the tensor holds its own copy
    assert t.numpy()[0, 0] != 1234.5
    b1, b2 = t.numpy(), t.numpy()
    assert not np.shares_memory(b1, b2) and not np.shares_memory(b1, a)
    assert b1.flags.owndata and b1.flags.c_contiguous and b1.flags.writeable
    b1[:] = 0.0  # writing the result does not touch the tensor
    assert t.numpy()[1, 1] == a[1, 1]


def test_non_contiguous_and_odd_inputs(rng):
    base = rng.normal(size=(6, 8))
    for view in (base.T, base[::2, 1::3], base[:, ::-1], np.asfortranarray(base)):
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(ag.from_numpy(view).numpy(), view)
    swapped = base.astype(">f8")  # big-endian: converted once to native float64
    t = ag.from_numpy(swapped)
    assert t.dtype is ag.float64
    np.testing.assert_array_equal(t.numpy(), base)
    ints = np.arange(6).reshape(2, 3)  # integer data becomes float64
    assert ag.from_numpy(ints).numpy().tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    f32 = ag.from_numpy(base, dtype=ag.float32)  # explicit dtype converts
    assert f32.dtype is ag.float32
    np.testing.assert_array_equal(f32.numpy(), base.astype(np.float32))


def test_zero_d_and_empty():
    s = ag.from_numpy(np.array(2.5))
    assert s.shape == () and s.item() == 2.5 and s.numpy().shape == ()
    e = ag.from_numpy(np.zeros((0, 3)))
    assert e.shape == (0, 3) and e.numpy().shape == (0, 3)
    with pytest.raises(TypeError):
        len(s)


def test_tensor_from_python_data_and_array_protocol():
    t = ag.tensor([[1, 2], [3, 4]])
    assert t.dtype is ag.float64  # Python numbers become float64, as in NumPy
    assert np.asarray(t).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert ag.tensor(np.float32(1.5)).dtype is ag.float32
    assert ag.tensor([1.0], dtype="float32").dtype is ag.float32
    assert ag.tensor([1.0], dtype=np.float32).dtype is ag.float32
    assert [float(r[0]) for r in t] == [1.0, 3.0]  # iteration over the first axis
    with pytest.raises(TypeError):
        ag.tensor(["a", "b"])
    with pytest.raises(TypeError):
        ag.tensor([1.0], dtype=np.int32)
    with pytest.raises(TypeError):
        ag.from_numpy([1.0, 2.0])  # not an ndarray


def test_from_numpy_reads_a_contiguous_array_in_place(monkeypatch, rng):
    # A C-contiguous float64 array is handed to ag_tensor_from_data as it is (the library
    # makes the one copy); a non-contiguous one goes through a converted temporary.
    import sys

    tmod = sys.modules["libautograd.tensor"]
    real = tmod.lib.ag_tensor_from_data
    pointers = []

    def spy(out, data, shape, ndim, dtype):
        pointers.append(data)
        return real(out, data, shape, ndim, dtype)

    monkeypatch.setattr(tmod.lib, "ag_tensor_from_data", spy)
    a = rng.normal(size=(5, 5))
    ag.from_numpy(a)
    assert pointers == [a.ctypes.data]
    t = ag.from_numpy(a.T)
    assert pointers[1] != a.ctypes.data
    np.testing.assert_array_equal(t.numpy(), a.T)
