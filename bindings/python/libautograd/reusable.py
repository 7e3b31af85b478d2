"""Reusable graphs: recomputable graphs (ag_set_recomputable, ag_recompute) and compiled
functions, captured once per input signature and replayed (ag_capture, ag_function_call).

Values in place and lazy re-evaluation (the design notebooks' graph that lives)::

    with ag.recomputable():              # ops recorded inside keep their forward
        x = ag.tensor(3.0, requires_grad=True)
        y = ag.tensor(5.0, requires_grad=True)
        z2 = (x + y) * y
    with ag.no_grad():
        x.set_data(4.0)                  # new value in place (a leaf that requires grad:
                                         # under no_grad, as any in-place write)
    z2.recompute()                       # z2 is 45 now, without rebuilding the graph
    ag.grad(z2, y, retain_graph=True)    # (14.0,)

Capture and replay (as ``jax.jit`` or ``mlx.compile``)::

    step = ag.compile(train_step)        # train_step(x, y) -> loss
    for x, y in batches:
        loss = step(x, y)                # first call: captures; then: one replay per call

See ``compile`` for what a capture freezes and what a replay reads again.
"""

import collections
import functools
import itertools
import sys
import threading
import types
import weakref
from ctypes import byref, c_bool, c_int64, c_uint64

from ._library import CAPTURE_FN, lib
from .errors import ERR_ARGUMENT, ArgumentError, check, set_pending, take_pending
from .grad_mode import is_grad_enabled
from .tensor import Tensor, adopt_if_kept, handle_from_numpy, handle_of

MAX_OUTPUTS = 4096  # ag_capture's limit on noutputs
FUNCTION_INFO_FIELDS = ("recorded_steps", "live_steps", "instructions", "fused_groups",
                        "fused_steps", "rerun_steps", "arena_bytes", "scratch_bytes")


# ---- recomputable graphs --------------------------------------------------------------------


def _set_recomputable(enabled):
    previous = c_bool(False)
    check(lib.ag_set_recomputable(byref(previous), bool(enabled)))
    return previous.value


class recomputable:
    """Context manager (and decorator): ops recorded on this thread inside keep their forward,
    so that ``recompute(root)`` can re-evaluate their graph after leaves were changed in place
    (``Tensor.set_data``, ``copy_``, an optimizer step). The previous setting is restored on
    exit, also when the block raises. ``recomputable(False)`` turns it off inside.

    Costs memory (the inputs of every recorded op stay alive with the graph), nothing outside.
    """

    def __init__(self, enabled=True):
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, not {type(enabled).__name__}")
        self._enabled = enabled
        self._previous = []  # a stack, so one instance can be entered again (nested, re-used)

    def __enter__(self):
        self._previous.append(_set_recomputable(self._enabled))
        return self

    def __exit__(self, exc_type, exc, tb):
        _set_recomputable(self._previous.pop())
        return False

    def __call__(self, fn):
        """Use as a decorator: fn runs with the setting."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with recomputable(self._enabled):
                return fn(*args, **kwargs)

        return wrapper


def recompute(root):
    """Re-evaluates, in place, every recorded op between the leaves and root (ag_recompute),
    from the current values of what they read; returns root.

    After leaves were written in place, root and every intermediate of its graph hold the values
    a fresh build would give, and ``backward`` / ``grad`` through the graph (kept with
    retain_graph=True) use them, any node with respect to any node. The graph must have been
    recorded inside ``recomputable()`` (StateError "was recorded without its forward" else).
    A root with no recorded history is left as it is.
    """
    check(lib.ag_recompute(handle_of(root, "root")))
    return root


# ---- compile: capture once per signature, replay ------------------------------------------

CacheInfo = collections.namedtuple("CacheInfo", "hits misses captures size")
CacheInfo.__doc__ = """Counters of a compiled function (``CompiledFunction.cache_info()``):
hits (calls answered by a replay), misses (calls that ran fn: each captured, or tried to),
captures (captured functions made), size (captured functions held now)."""


class _Entry:
    """One captured function (an ag_function handle), freed when collected."""

    __slots__ = ("handle", "noutputs", "structure", "masks", "__weakref__")

    def __init__(self, handle, noutputs, structure, masks):
        self.handle = handle
        self.noutputs = noutputs
        self.structure = structure
        self.masks = masks

    def free(self):
        handle, self.handle = self.handle, 0
        if handle:
            check(lib.ag_function_free(handle))

    def __del__(self, _is_finalizing=sys.is_finalizing):
        if self.handle and not _is_finalizing():
            handle, self.handle = self.handle, 0
            _function_free(handle)

    def info(self):
        out = (c_int64 * len(FUNCTION_INFO_FIELDS))()
        check(lib.ag_function_info(out, len(out), self.handle))
        return dict(zip(FUNCTION_INFO_FIELDS, out))


_function_free = lib.ag_function_free


class _CaptureJob:
    """What the trampoline needs for one ag_capture call, and what it leaves behind."""

    __slots__ = ("fn", "args", "kwargs", "slots", "outputs", "structure", "mismatch")

    def __init__(self, fn, args, kwargs, slots):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.slots = slots  # (position or keyword, input index) of each tensor argument
        self.outputs = None
        self.structure = None
        self.mismatch = False


_jobs = {}
_job_keys = itertools.count(1)
_jobs_lock = threading.Lock()


def _flatten_outputs(result):
    """(list of output Tensors, structure) of fn's result: a Tensor, or a tuple / list
    (namedtuples included) of Tensors."""
    if isinstance(result, Tensor):
        return [result], None
    if isinstance(result, (tuple, list)):
        items = list(result)
        if not items:
            raise ValueError("the compiled function returned an empty sequence: it must return "
                             "at least one Tensor")
        for i, t in enumerate(items):
            if not isinstance(t, Tensor):
                raise TypeError(f"the compiled function must return a Tensor or a tuple/list of "
                                f"Tensors; element {i} is a {type(t).__name__}")
        return items, type(result)
    raise TypeError(f"the compiled function must return a Tensor or a tuple/list of Tensors, "
                    f"not {type(result).__name__}")


def _unflatten(outputs, structure):
    if structure is None:
        return outputs[0]
    if structure is list:
        return list(outputs)
    if structure is tuple:
        return tuple(outputs)
    if hasattr(structure, "_fields"):  # a namedtuple
        return structure(*outputs)
    return structure(outputs)


@CAPTURE_FN
def _capture_trampoline(outputs, noutputs, inputs, ninputs, user_data):
    """The one ag_capture_fn: runs the job registered under user_data on the placeholders the
    library passes (borrowed Tensors), and hands the library a handle of its own to each output
    (ag_detach: the same values, so the capture resolves the output to what computed it)."""
    job = _jobs[user_data]
    placeholders = [Tensor._wrap(inputs[i], owned=False) for i in range(ninputs)]
    kept = [weakref.ref(p) for p in placeholders]
    args = list(job.args)
    kwargs = dict(job.kwargs)
    for where, k in job.slots:
        if isinstance(where, int):
            args[where] = placeholders[k]
        else:
            kwargs[where] = placeholders[k]
    result = None
    try:
        result = job.fn(*args, **kwargs)
        outs, job.structure = _flatten_outputs(result)
        job.outputs = outs
        if len(outs) != noutputs:
            job.mismatch = True  # the caller learns the count (see CompiledFunction.__call__)
            return 1
        for k, t in enumerate(outs):
            h = c_uint64(0)
            check(lib.ag_detach(byref(h), t._handle))
            outputs[k] = h.value  # taken over by the library, also if a later one fails
        return 0
    except BaseException as exc:  # noqa: BLE001 - re-raised by errors.check as the __cause__
        set_pending(exc)
        return 1
    finally:
        # An input fn kept (returned, stored) gets a handle of its own before the library
        # reclaims the placeholders' handles (a copy, recorded but never replayed: no output
        # needs it).
        del args, kwargs, placeholders, result
        for ref in kept:
            adopt_if_kept(ref)


def _copy_out(t):
    """A new leaf holding t's values (bit for bit), without history: what a replay returns."""
    out = Tensor._wrap(handle_from_numpy(t.numpy()))
    out._mask = t._mask
    return out


class CompiledFunction:
    """A function compiled by ``compile``: call it as the function. See ``compile``."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"compile needs a callable, not {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._cache = {}
        self._lock = threading.RLock()  # fn may call this compiled function again (refused by the library)
        self._noutputs = 1  # the number of outputs fn returned last (ag_capture needs it first)
        self._hits = self._misses = self._captures = 0

    def __get__(self, obj, objtype=None):
        """As a method (a compiled function defined in a class): bound to obj, which is then a
        non-Tensor argument (hashed by identity unless its class says otherwise)."""
        return self if obj is None else types.MethodType(self, obj)

    def __repr__(self):
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        return f"<compiled {name}: {len(self._cache)} captured signature(s)>"

    # -- signatures -------------------------------------------------------------------------

    @staticmethod
    def _key_of(value, what):
        """The key of a non-Tensor argument: (its type, itself)."""
        if _holds_tensor(value):
            raise TypeError(f"{what}: Tensors inside containers are not supported by compile; "
                            "pass each Tensor as its own argument")
        try:
            hash(value)
        except TypeError:
            raise TypeError(f"{what}: non-Tensor arguments of a compiled function are part of "
                            f"its cache key and must be hashable; {type(value).__name__} is not "
                            "(pass arrays as Tensors)") from None
        return (type(value), value)

    def _signature(self, args, kwargs):
        """(cache key, tensor inputs, slots): see compile."""
        key, tensors, slots = [is_grad_enabled()], [], []
        for i, a in enumerate(args):
            k = _tensor_key(a) if isinstance(a, Tensor) else self._key_of(a, f"argument {i}")
            if k[0] == "T":
                slots.append((i, len(tensors)))
                tensors.append(a)
            key.append(k)
        for name in sorted(kwargs):
            a = kwargs[name]
            k = _tensor_key(a) if isinstance(a, Tensor) else self._key_of(a, f"argument {name!r}")
            if k[0] == "T":
                slots.append((name, len(tensors)))
                tensors.append(a)
            key.append((name, k))
        return tuple(key), tensors, slots

    # -- calls ------------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        key, tensors, slots = self._signature(args, kwargs)
        entry = self._cache.get(key)
        if entry is not None:
            self._hits += 1
            return self._replay(entry, tensors)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._hits += 1
                return self._replay(entry, tensors)
            self._misses += 1
            return self._capture(key, args, kwargs, tensors, slots)

    def _capture(self, key, args, kwargs, tensors, slots):
        job = _CaptureJob(self._fn, args, kwargs, slots)
        with _jobs_lock:
            job_key = next(_job_keys)
            _jobs[job_key] = job
        handle = c_uint64(0)
        n = len(tensors)
        ins = (c_uint64 * n)(*[t._handle for t in tensors]) if n else None
        try:
            take_pending()  # nothing stale may become the cause of this call's error
            status = lib.ag_capture(byref(handle), _capture_trampoline, ins, n, self._noutputs,
                                    job_key)
        finally:
            with _jobs_lock:
                _jobs.pop(job_key, None)
        if job.mismatch:
            # fn returned another number of outputs than guessed: it ran (its effects happened,
            # as in any call) but nothing was captured. Its results answer this call; the next
            # call with this signature captures with the right count.
            take_pending()
            count = len(job.outputs)
            if count > MAX_OUTPUTS:
                raise ArgumentError(ERR_ARGUMENT, f"the compiled function returned {count} "
                                    f"outputs; at most {MAX_OUTPUTS} can be captured")
            self._noutputs = count
            return _unflatten([_copy_out(t) for t in job.outputs], job.structure)
        check(status)
        self._captures += 1
        entry = _Entry(handle.value, len(job.outputs), job.structure,
                       [t._mask for t in job.outputs])
        self._cache[key] = entry
        return _unflatten([_copy_out(t) for t in job.outputs], job.structure)

    @staticmethod
    def _replay(entry, tensors):
        n = len(tensors)
        ins = (c_uint64 * n)(*[t._handle for t in tensors]) if n else None
        outs = (c_uint64 * entry.noutputs)()
        check(lib.ag_function_call(outs, entry.noutputs, entry.handle, ins, n))
        results = [Tensor._wrap(h) for h in outs]
        for t, m in zip(results, entry.masks):
            t._mask = m
        return _unflatten(results, entry.structure)

    def call_into(self, out, *args, **kwargs):
        """Calls the compiled function on args, writing its outputs into the existing Tensors
        `out` (a Tensor, or a sequence with one per output) in place, and returns out. A
        replay (ag_function_call_into) allocates nothing: each output tensor must be a leaf
        of the output's shape and dtype, not requiring grad while grad mode is on (StateError,
        ShapeError, DTypeError else); their version counters are bumped. A call that captures
        writes its results the same way (ag_tensor_copy_, after checking shapes and dtypes).
        """
        targets = [out] if isinstance(out, Tensor) else list(out)
        for i, t in enumerate(targets):
            handle_of(t, f"out[{i}]")
        key, tensors, _ = self._signature(args, kwargs)
        entry = self._cache.get(key)
        if entry is None:
            results = self(*args, **kwargs)
            results = [results] if isinstance(results, Tensor) else list(results)
            if len(results) != len(targets):
                raise ValueError(f"{len(targets)} output tensors for {len(results)} outputs")
            for i, (dst, src) in enumerate(zip(targets, results)):
                if dst.shape != src.shape or dst.dtype is not src.dtype:
                    raise ValueError(f"out[{i}] is {dst.dtype} {dst.shape}, output {i} is "
                                     f"{src.dtype} {src.shape}")
                dst._check_writable("call_into")
            for dst, src in zip(targets, results):
                check(lib.ag_tensor_copy_(dst._handle, src._handle))
                dst._mask = src._mask
            return out
        self._hits += 1
        n = len(tensors)
        ins = (c_uint64 * n)(*[t._handle for t in tensors]) if n else None
        outs = (c_uint64 * len(targets))(*[t._handle for t in targets])
        check(lib.ag_function_call_into(outs, len(targets), entry.handle, ins, n))
        for t, m in zip(targets, entry.masks):
            t._mask = m
        return out

    # -- inspection -------------------------------------------------------------------------

    def cache_info(self):
        """A CacheInfo(hits, misses, captures, size) of this compiled function."""
        return CacheInfo(self._hits, self._misses, self._captures, len(self._cache))

    def function_info(self, *args, **kwargs):
        """What the compiler made of the capture these arguments would replay (ag_function_info:
        recorded_steps, live_steps, instructions, fused_groups, fused_steps, rerun_steps,
        arena_bytes, scratch_bytes), as a dict; None when that signature is not captured."""
        key, _, _ = self._signature(args, kwargs)
        entry = self._cache.get(key)
        return None if entry is None else entry.info()

    def clear_cache(self):
        """Frees every captured function; the next call of each signature captures again."""
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
        for e in entries:
            e.free()


def _tensor_key(t):
    """("T", shape, dtype code, requires_grad) of a Tensor argument. A handle's shape and dtype
    never change, so they are remembered on the Tensor with the handle they belong to (a call's
    signature then costs one C call per Tensor, for requires_grad)."""
    h = t._handle
    known = t.__dict__.get("_signature")
    if known is None or known[0] != h:
        known = (h, t.shape, t.dtype.code)
        t._signature = known
    flag = c_bool(False)
    status = _requires_grad(byref(flag), h)
    if status:
        check(status)
    return ("T", known[1], known[2], flag.value)


_requires_grad = lib.ag_tensor_requires_grad


def _holds_tensor(value):
    if isinstance(value, Tensor):
        return True
    if isinstance(value, (tuple, list, set, frozenset)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


def compile(fn):  # noqa: A001 - the name of mlx.compile / torch.compile
    """Compiles fn, a function of Tensors, into a callable that captures fn once per input
    signature and replays the capture on later calls (ag_capture, ag_function_call); like
    ``jax.jit`` and ``mlx.compile``. Usable as a decorator.

    The signature of a call is: for each Tensor argument (positional or keyword) its shape,
    dtype and requires_grad; every other argument's value (with its type), which must be
    hashable; and whether grad mode is on. The first call with a signature runs fn once on
    placeholder copies of the Tensor arguments (with their values and requires_grad) while the
    library records every op, backward, ``grad`` and optimizer step it makes, and compiles that
    into a captured function; fn's effects happen then (an optimizer step in fn is a real
    step). Later calls with the signature replay it: the same ops, backward passes and in-place
    writes in the same order on the new values, one C call, with results equal bit for bit to
    what fn would compute eagerly on them.

    Frozen at capture: everything Python does between the ops (control flow, also on values
    read with item() / numpy() / bool(); values computed in NumPy, such as item assignment
    x[i] = v), non-Tensor arguments, and tensors made inside fn (constants, random tensors).
    Read again at each call: the Tensor arguments' values, and tensors made outside fn
    (parameters, closed over, not passed as arguments) where they are then, so an optimizer in
    fn updates them (and its own state) at each call. Not replayed: ``.grad`` fields (return
    gradients as outputs) and hooks (a capture whose backward reaches one is refused,
    StateError).

    fn returns a Tensor or a tuple / list (or namedtuple) of Tensors; calls return the same
    structure, holding new Tensors without history (a compiled function is not differentiated
    through from outside). Should fn return another number of outputs than its previous
    capture (ag_capture needs the count before fn runs), that call is still answered from its
    run and the next call captures. An exception fn raises during a capture propagates as the
    __cause__ of a CallbackError. Captures inside a capture, and calling a compiled function
    inside another's capture, are refused (StateError). Calls of one captured function from
    several threads run one at a time. The captured functions are freed with the compiled
    object (or by ``clear_cache()``); ``cache_info()`` counts hits, misses and captures.
    """
    return CompiledFunction(fn)
