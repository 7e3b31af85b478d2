"""Functions over whole graphs: grad (torch.autograd.grad), gradcheck and graph_to_dot."""

import contextlib
import itertools
import threading
import weakref
from ctypes import byref, c_bool, c_double, c_int64, c_uint64, create_string_buffer

from ._library import BUILD_FN, lib
from .errors import check, error_for, set_pending
from .tensor import Tensor, adopt_if_kept, coerce, handle_of


def _tensor_list(value, what):
    if isinstance(value, Tensor):
        return [value]
    if not hasattr(value, "__iter__"):
        raise TypeError(f"{what} must be a Tensor or a sequence of Tensors")
    items = list(value)
    for i, t in enumerate(items):
        handle_of(t, f"{what}[{i}]")
    if not items:
        raise ValueError(f"{what} is empty")
    return items


def grad(outputs, inputs, grad_outputs=None, retain_graph=False, create_graph=False,
         allow_unused=False):
    """The gradients of sum_k <outputs[k], grad_outputs[k]> with respect to each input, as a
    tuple of Tensors (None for an unused input when allow_unused), without touching any .grad.

    outputs / inputs: a Tensor or a sequence of Tensors. grad_outputs: None (every output a
    scalar, seed 1) or one seed per output (a Tensor, array-like, or None for 1 on a scalar).
    """
    outs = _tensor_list(outputs, "outputs")
    ins = _tensor_list(inputs, "inputs")
    seeds_arr, keep = None, []
    if grad_outputs is not None:
        seeds = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
        if len(seeds) != len(outs):
            raise ValueError(f"{len(seeds)} grad_outputs for {len(outs)} outputs")
        handles = []
        for seed, out in zip(seeds, outs):
            if seed is None:
                handles.append(0)
                continue
            t = coerce(seed, out, "grad_outputs")
            if t is None:
                raise TypeError("grad_outputs must hold Tensors, array-likes or None")
            keep.append(t)
            handles.append(t._handle)
        seeds_arr = (c_uint64 * len(handles))(*handles)
    out_grads = (c_uint64 * len(ins))()
    check(lib.ag_grad(
        out_grads,
        (c_uint64 * len(outs))(*[t._handle for t in outs]), len(outs),
        seeds_arr,
        (c_uint64 * len(ins))(*[t._handle for t in ins]), len(ins),
        bool(retain_graph), bool(create_graph), bool(allow_unused),
    ))
    return tuple(Tensor._wrap(h) if h else None for h in out_grads)


# ---- build functions: the Python function that gradcheck and the transforms run ---------------

_build_fns = {}
_keys = itertools.count(1)
_lock = threading.Lock()


@BUILD_FN
def _build(out, inputs, n, user_data):
    """The one ag_build_fn trampoline: calls the Python function registered under user_data
    (see build_function) on the borrowed inputs, and hands its result to the library."""
    args = [Tensor._wrap(inputs[i], owned=False) for i in range(n)]  # borrowed for the call
    kept = [weakref.ref(a) for a in args]
    result = None
    try:
        fn = _build_fns[user_data]
        result = fn(*args)
        if not isinstance(result, Tensor):
            raise TypeError(f"the function must return a Tensor, not {type(result).__name__}")
        # The library frees *out; give it a handle of its own (result keeps its own).
        fresh = c_uint64(0)
        status = lib.ag_mul_scalar(byref(fresh), result._handle, 1.0)
        if status:
            raise error_for(status)
        out[0] = fresh.value
        return 0
    except BaseException as exc:  # noqa: BLE001 - re-raised by errors.check as the __cause__
        set_pending(exc)
        return 1
    finally:
        del args, result  # an input fn kept (or returned) gets a handle of its own
        for ref in kept:
            adopt_if_kept(ref)


@contextlib.contextmanager
def build_function(fn):
    """Registers fn for the _build trampoline while a call runs; yields its user_data key."""
    if not callable(fn):
        raise TypeError(f"the function must be callable, not {type(fn).__name__}")
    with _lock:
        key = next(_keys)
        _build_fns[key] = fn
    try:
        yield key
    finally:
        with _lock:
            _build_fns.pop(key, None)


# ---- gradcheck ----------------------------------------------------------------------------------


class GradcheckResult:
    """The outcome of gradcheck; true when it passed (so ``assert gradcheck(...)`` works)."""

    def __init__(self, passed, worst_input, worst_index, analytic, numeric):
        self.passed = passed
        self.worst_input = worst_input
        self.worst_index = worst_index
        self.analytic = analytic
        self.numeric = numeric

    def __bool__(self):
        return self.passed

    def __repr__(self):
        return (f"GradcheckResult(passed={self.passed}, worst_input={self.worst_input}, "
                f"worst_index={self.worst_index}, analytic={self.analytic!r}, "
                f"numeric={self.numeric!r})")


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compares the analytic gradient of fn(*inputs) with central finite differences.

    inputs: float64 Tensors (those requiring grad are checked). Returns a GradcheckResult
    (truthy when passed) naming the worst element.
    """
    if not callable(fn):
        raise TypeError("fn must be callable")
    ins = _tensor_list(inputs, "inputs")
    passed = c_bool(False)
    worst_input, worst_index = c_int64(-1), c_int64(-1)
    analytic, numeric = c_double(0.0), c_double(0.0)
    with build_function(fn) as key:
        check(lib.ag_gradcheck(
            byref(passed), byref(worst_input), byref(worst_index), byref(analytic),
            byref(numeric), _build, key, (c_uint64 * len(ins))(*[t._handle for t in ins]),
            len(ins), float(eps), float(atol), float(rtol),
        ))
    return GradcheckResult(passed.value, worst_input.value, worst_index.value, analytic.value,
                           numeric.value)


def graph_to_dot(root):
    """A Graphviz DOT description of the graph that produced root."""
    h = handle_of(root, "root")
    length = c_int64(0)
    check(lib.ag_graph_to_dot(None, 0, byref(length), h))
    buf = create_string_buffer(length.value + 1)
    check(lib.ag_graph_to_dot(buf, length.value + 1, byref(length), h))
    return buf.value.decode("utf-8", "replace")
