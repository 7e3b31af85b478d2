"""The number protocol (issue 14, item 22), as PyTorch and NumPy: a 0-d tensor formats with a
format spec; float(), int(), complex(), round() and bool() work on any one-element tensor;
__index__ is refused (only integer tensors are indices in PyTorch, and libautograd has none);
repr shows the shape of an empty tensor. References: the same calls on Python floats."""

import math
import operator

import numpy as np
import pytest

import libautograd as ag

VALUES = [2.718281828459045, -2.5, 0.5, 1.5, -0.0, 1e300, 123456.789]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("spec", [".4f", "e", ".3g", "10.2f", "+.1%", ""])
def test_format_of_a_0d_tensor(value, spec):
    t = ag.tensor(value)
    assert format(t, spec) == (format(value, spec) if spec else str(t))
    assert f"{(t * 1):{spec}}" == format(t, spec)


def test_format_of_float32_uses_its_value():
    t = ag.tensor(0.1, dtype=ag.float32)
    assert f"{t:.10f}" == f"{float(np.float32(0.1)):.10f}"


def test_format_spec_on_a_tensor_with_axes_is_a_type_error():
    for t in (ag.tensor([1.5]), ag.ones(2, 2)):
        with pytest.raises(TypeError, match="0-d"):
            f"{t:.4f}"
        assert f"{t}" == str(t)


@pytest.mark.parametrize("value", VALUES + [2.999, -2.999, 1e18])
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_int_float_complex_round_bool(value, shape):
    t = ag.full(shape, value)
    assert int(t) == int(value) and type(int(t)) is int
    assert float(t) == value and type(float(t)) is float
    assert complex(t) == complex(value)
    assert round(t) == round(value) and type(round(t)) is int
    for digits in (0, 2, -1):
        assert round(t, digits) == round(value, digits) and type(round(t, digits)) is float
    assert bool(t) == bool(value)


def test_int_of_nan_and_inf_raise_as_for_floats():
    with pytest.raises(ValueError):
        int(ag.tensor(math.nan))
    with pytest.raises(OverflowError):
        int(ag.tensor(math.inf))
    with pytest.raises(OverflowError):
        round(ag.tensor(-math.inf))
    assert bool(ag.tensor(math.nan))  # as bool(float("nan"))


def test_more_than_one_element_is_refused():
    for t in (ag.ones(2), ag.ones(1, 2)):
        for convert in (int, float, complex, round, bool):
            with pytest.raises(ValueError, match="one element"):
                convert(t)
    with pytest.raises(ValueError, match="no elements|no values"):
        bool(ag.zeros(0))
    with pytest.raises(ValueError, match="one element"):
        int(ag.zeros(1, 0))


def test_index_is_refused_for_float_tensors():
    t = ag.tensor(1.0)
    with pytest.raises(TypeError, match="integer"):
        operator.index(t)
    with pytest.raises(TypeError, match="integer"):
        [10, 20, 30][t]
    with pytest.raises(TypeError, match="integer"):
        range(t)


@pytest.mark.parametrize("shape", [(1, 0), (0, 3), (2, 0, 3), (0,)])
def test_repr_of_empty_tensors_shows_the_shape(shape):
    text = repr(ag.zeros(*shape))
    if shape == (0,):
        assert text == "tensor([], dtype=float64)"  # the shape (0,) is what [] says, as torch
    else:
        assert text == f"tensor([], size={shape}, dtype=float64)"
    assert str(ag.zeros(*shape, requires_grad=True)).endswith("requires_grad=True)")


def test_contains():
    t = ag.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert 3 in t and 3.0 in t and 5 not in t
    assert ag.tensor([3.0, 4.0]) in t  # as torch: any element equal after broadcasting


def test_array_protocol():
    t = ag.tensor([[1.0, 2.0]])
    a = np.asarray(t)
    assert a.dtype == np.float64 and a.tolist() == [[1.0, 2.0]]
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    shared = np.array(t, copy=False)  # NumPy 2: must not copy: shared through DLPack
    assert shared.ctypes.data == t.data_ptr() and a.ctypes.data != t.data_ptr()
    with pytest.raises(ValueError, match="copy"):
        np.array(t, dtype=np.float32, copy=False)  # a conversion cannot share
    assert not hasattr(t, "__array_interface__")  # views go through DLPack, which keeps the memory alive
