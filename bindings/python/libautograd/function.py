"""User-defined differentiable ops, as PyTorch's ``torch.autograd.Function``, over the C API's
custom ops (ag_custom_op_new, ag_custom_op_apply, ag_custom_ctx_*).

::

    class Cube(ag.Function):
        @staticmethod
        def forward(ctx, x):                 # any computation: library ops, NumPy, a C routine
            ctx.save_for_backward(x)
            return ag.tensor(x.numpy() ** 3, dtype=x.dtype)

        @staticmethod
        def backward(ctx, g):                # one gradient per forward argument
            (x,) = ctx.saved_tensors
            return g * 3 * x * x             # library ops: second derivatives work too

        @staticmethod
        def jvp(ctx, tx):                    # optional: forward mode (ag.jvp, hvp, hessian)
            (x,) = ctx.saved_tensors
            return tx * 3 * x * x

    y = Cube.apply(x)

How it maps onto the C API:

- Each Function subclass gets its C op (ag_custom_op_new) on first use, made once per argument
  layout (which positions are Tensors), output count and non-Tensor argument values, and cached
  on the class (a bounded cache; an op whose non-Tensor arguments are unhashable is made for
  one application). A graph or captured function that uses an op keeps it after the cache lets
  go; its Python payload (the class's functions and the non-Tensor arguments) is released by
  the op's destroy callback once nothing can call it. The callbacks are three module-level
  ctypes trampolines, alive as long as the module.
- Tensor arguments are the op's inputs; other arguments are passed through to ``forward`` as
  they are (and are frozen into the op: a replay of a compiled function passes the same ones).
  ``backward`` returns one gradient per argument, None for non-Tensor arguments.
- ``ctx`` is a Python object per application: attributes set on it in ``forward`` are seen by
  ``backward`` and ``jvp`` of that application. Tensors given to ``ctx.save_for_backward`` are
  saved by the library (ag_custom_ctx_save): an input or output saved there is, in backward,
  that tensor with its history, so second derivatives through a backward written with library
  ops are right. Other tensors kept as ctx attributes are constants (as in PyTorch, save
  inputs and outputs with save_for_backward). When ``forward`` sets attributes, the ctx is
  the application's state (ag_custom_ctx_set_state, a key into a table of ctx objects), which
  backward and jvp read (ag_custom_ctx_state): it lives exactly as long as the graph (until a
  backward without retain_graph releases it, or right after apply when nothing is recorded),
  and its destroy callback drops it from the table. A ctx without attributes is not kept
  (backward gets a new one with the saved tensors). Either way the op saves only what forward
  saved, so ``ag.recompute`` reruns an op of one output that saves inputs and outputs (its
  forward sets the ctx again).
- ``forward`` learns how many outputs it has only by running: the first application of a class
  whose forward returns another count than its last (1 at first) runs ``forward`` once, and the
  op is made again with the right count from that run (forward is not called twice).

Errors. An exception raised in ``forward``, ``backward`` or ``jvp`` makes its callback fail
(the library's message quotes the exception's repr, set with ag_set_error) and surfaces from
the Python call that ran the callback (``apply``, ``backward()``, ``ag.grad``, the transforms,
``gradcheck``, a compiled function) as that same exception, its ``__cause__`` the library's
CallbackError (if it already had a cause of its own, the library's message is added as a note
instead). A broken contract (a wrong number of outputs, gradients or tangents; something else
than a Tensor or None; a gradient for a non-Tensor argument; a gradient or tangent of the
wrong shape or dtype; outputs of different dtypes) is the library's CallbackError, whose
message says what was wrong. No ``backward`` (not overridden): StateError on a backward through
the op; no ``jvp``: StateError in forward mode.

Threads: ``forward`` and ``jvp`` run on the thread that calls ``apply``; ``backward`` on the
thread that runs the backward pass, without the library's lock held, so it may call the
library freely. One Function may be applied from several threads at once, and its callbacks
then run at once: what they share (class attributes, globals) is theirs to synchronise. The
ctx is per application; the state a callback reads from it (saved_tensors, needs_input_grad)
is per thread.

Capture (``ag.compile``) and recompute: a Function applied inside a compiled function is one
step of the capture, and every replay calls ``forward`` (and ``backward``, where the captured
function runs one) again, on the replay's values and with a fresh ctx, on the calling thread.
What the callbacks do in Python (other than library ops on their arguments) is not frozen: it
runs again at each replay, so forward must return the same shapes every time (else the replay
fails with CallbackError). Each replay's forward sets a new ctx, which that replay's backward
reads; the last one is kept with the compiled function until the next replay or its end.
"""

import collections
import itertools
import sys
import threading
import weakref
from ctypes import byref, c_bool, c_int64, c_uint64, c_void_p

from ._library import CUSTOM_BACKWARD, CUSTOM_FORWARD, CUSTOM_JVP, DESTROY, lib
from .errors import ERR_CALLBACK, OK, check, set_pending, take_pending
from .grad_mode import no_grad
from .tensor import MAX_NDIM, Tensor, adopt_if_kept

__all__ = ["Function", "FunctionCtx"]

MAX_ARITY = 256  # the most inputs, and the most outputs, of a C custom op
CACHE_SIZE = 64  # C ops kept per class (argument layouts x output counts x constants)

_tls = threading.local()  # frames (applies in progress), per thread
# _records and _contexts are read and written by single dict operations (atomic under the GIL),
# without a lock: the destroy callbacks that pop them may run while the library holds its
# internal lock, and must not wait for a thread that holds a Python lock and calls the library.
_lock = threading.Lock()  # guards _classes and their caches; never held while calling the library
_records = {}  # payload key -> _OpRecord (released by the op's destroy callback)
_record_keys = itertools.count(1)
_contexts = {}  # ctx key -> FunctionCtx (an application's state: released by _release_ctx)
_ctx_keys = itertools.count(1)
_classes = weakref.WeakKeyDictionary()  # Function subclass -> _ClassState


class _Contract(Exception):
    """A callback broke the op's contract: reported as the library's error (ag_set_error)."""


# ---------------------------------------------------------------------------------------------
# ctx
# ---------------------------------------------------------------------------------------------


class FunctionCtx:
    """The ``ctx`` of one application of a Function (PyTorch's ctx).

    In ``forward``: ``save_for_backward(*tensors)``, ``needs_input_grad``, and any attribute
    (``ctx.k = 3``). In ``backward`` and ``jvp``: ``saved_tensors``, ``needs_input_grad`` and
    the attributes set in forward. Attribute names starting with ``_ag_`` are the binding's.
    """

    def __init__(self):
        self._ag_call = threading.local()  # this thread's callback: (phase, c ctx, record, saved)
        self._ag_to_save = None  # what forward gave save_for_backward (until handed to the library)
        self._ag_none = ()  # positions of None in save_for_backward
        self._ag_needs = None  # needs_input_grad as forward saw it

    def __repr__(self):
        user = sorted(k for k in self.__dict__ if not k.startswith("_ag_"))
        return f"<FunctionCtx attributes={user}>"

    # -- per callback --------------------------------------------------------------------------

    def _ag_begin(self, phase, c_ctx, record, saved=None):
        previous = getattr(self._ag_call, "state", None)
        self._ag_call.state = (phase, c_ctx, record, saved)
        return previous

    def _ag_end(self, previous):
        self._ag_call.state = previous

    def _ag_state(self, what):
        state = getattr(self._ag_call, "state", None)
        if state is None:
            raise RuntimeError(f"ctx.{what} is available only inside forward, backward or jvp "
                               "(the ctx of a Function is not usable after its callbacks)")
        return state

    def _ag_has_state(self):
        """Whether backward or jvp needs this very object: forward set an attribute of its own
        (or saved a None)."""
        return bool(self._ag_none) or any(not k.startswith("_ag_") for k in self.__dict__)

    # -- the PyTorch API -----------------------------------------------------------------------

    def save_for_backward(self, *tensors):
        """Saves tensors (or None) for backward and jvp, read there as ``ctx.saved_tensors``
        in the same order. Forward only; a second call replaces the first. Save inputs and
        outputs here (not as ctx attributes) when second derivatives through them matter: in
        backward they are those tensors with their history."""
        phase = self._ag_state("save_for_backward")[0]
        if phase != "forward":
            raise RuntimeError("save_for_backward can only be called in forward")
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward takes Tensors or None; argument {i} is a "
                                f"{type(t).__name__} (keep other values as ctx attributes)")
        self._ag_to_save = list(tensors)

    @property
    def saved_tensors(self):
        """The tensors forward saved, as a tuple (backward and jvp)."""
        phase, _, _, saved = self._ag_state("saved_tensors")
        if phase == "forward":
            raise RuntimeError("saved_tensors is available in backward and jvp, not in forward")
        return saved

    @property
    def needs_input_grad(self):
        """A tuple of bools, one per forward argument: whether a gradient is wanted for it
        (False for non-Tensor arguments). In forward: the argument requires grad and the op is
        recorded; in backward: this pass wants the gradient (backward may skip the others)."""
        state = getattr(self._ag_call, "state", None)
        if state is None:
            if self._ag_needs is None:
                raise RuntimeError("needs_input_grad is available inside forward and backward")
            return self._ag_needs
        _, c_ctx, record, _ = state
        flag = c_bool(False)
        needs, j = [], 0
        for is_tensor in record.layout:
            if not is_tensor:
                needs.append(False)
                continue
            check(lib.ag_custom_ctx_needs_input_grad(byref(flag), c_ctx, j))
            needs.append(flag.value)
            j += 1
        needs = tuple(needs)
        if state[0] == "forward":
            self._ag_needs = needs
        return needs


# ---------------------------------------------------------------------------------------------
# C ops, their payloads and their cache
# ---------------------------------------------------------------------------------------------


class _OpRecord:
    """What the trampolines need of one C op (its payload, under a key)."""

    __slots__ = ("name", "cls", "forward", "setup_context", "backward", "jvp", "layout",
                 "constants", "noutputs")

    def __init__(self, cls, fns, layout, constants, noutputs):
        self.name = cls.__name__
        self.cls = weakref.ref(cls)
        self.forward, self.setup_context, self.backward, self.jvp = fns
        self.layout = layout
        self.constants = constants
        self.noutputs = noutputs

    def arguments(self, tensors):
        """forward's arguments: the tensors where the layout has them, the constants between."""
        tensors, constants = iter(tensors), iter(self.constants)
        return [next(tensors) if is_tensor else next(constants) for is_tensor in self.layout]


class _OpHandle:
    """One ag_custom_op handle, freed when collected (graphs keep the op as long as they need)."""

    __slots__ = ("handle", "record_key", "__weakref__")

    def __init__(self, handle, record_key):
        self.handle = handle
        self.record_key = record_key

    def __del__(self, _is_finalizing=sys.is_finalizing):
        handle, self.handle = self.handle, 0
        if handle and not _is_finalizing():
            _op_free(handle)


_op_free = lib.ag_custom_op_free
_NO_BACKWARD = CUSTOM_BACKWARD()  # NULL function pointers (ctypes refuses None for them)
_NO_JVP = CUSTOM_JVP()


class _ClassState:
    """Per Function subclass: its cached C ops (LRU) and the output count forward last gave."""

    __slots__ = ("ops", "noutputs")

    def __init__(self):
        self.ops = collections.OrderedDict()
        self.noutputs = 1


@DESTROY
def _destroy_record(key):
    _records.pop(key, None)  # the class's functions and the constants go here


def _functions_of(cls):
    """(forward, setup_context or None, backward or None, jvp or None) of a subclass."""
    setup = cls.setup_context if cls.setup_context is not Function.setup_context else None
    if cls.backward is not Function.backward:
        backward = cls.backward
    elif cls.vjp is not Function.vjp:
        backward = cls.vjp
    else:
        backward = None
    jvp = cls.jvp if cls.jvp is not Function.jvp else None
    return cls.forward, setup, backward, jvp


def _new_op(cls, layout, constants, noutputs):
    fns = _functions_of(cls)
    record = _OpRecord(cls, fns, layout, constants, noutputs)
    key = next(_record_keys)
    _records[key] = record
    out = c_uint64(0)
    status = lib.ag_custom_op_new(byref(out), record.name.encode("utf-8", "replace"),
                                  sum(layout), noutputs, _forward_trampoline,
                                  _backward_trampoline if fns[2] is not None else _NO_BACKWARD,
                                  _jvp_trampoline if fns[3] is not None else _NO_JVP,
                                  key, _destroy_record)
    if status != OK:
        _records.pop(key, None)  # on failure destroy is not called
        check(status)
    return _OpHandle(out.value, key)


def _constants_key(constants):
    """A cache key for the non-Tensor arguments (their types and values), or None when one is
    unhashable (the op is then made for one application)."""
    key = tuple((type(c), c) for c in constants)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _op_for(cls, layout, constants, noutputs):
    """The C op of cls for this layout, output count and constants: cached, else made."""
    ckey = _constants_key(constants)
    key = None if ckey is None else (layout, noutputs, ckey)
    with _lock:
        state = _classes.get(cls)
        if state is None:
            state = _classes[cls] = _ClassState()
        if key is not None:
            op = state.ops.get(key)
            if op is not None:
                state.ops.move_to_end(key)
                return op
    op = _new_op(cls, layout, constants, noutputs)  # outside the lock: it calls the library
    if key is None:
        return op
    evicted = []
    with _lock:
        other = state.ops.get(key)
        if other is not None:  # another thread made it meanwhile: use that one
            evicted.append(op)
            return other
        state.ops[key] = op
        while len(state.ops) > CACHE_SIZE:
            evicted.append(state.ops.popitem(last=False)[1])
    del evicted  # freed outside the lock
    return op


def _forget(cls, layout, constants, noutputs):
    """Drops a cached op made with an output count forward does not give."""
    ckey = _constants_key(constants)
    with _lock:
        state = _classes.get(cls)
        op = None if state is None or ckey is None else state.ops.pop((layout, noutputs, ckey), None)
    del op


# ---------------------------------------------------------------------------------------------
# ctx objects across callbacks: the application's state
# ---------------------------------------------------------------------------------------------


@DESTROY
def _release_ctx(key):
    """The application is over (its graph freed or released by a backward without
    retain_graph; not recorded at all; or, in a compiled function, the next replay's forward
    set its own ctx): so is the ctx. Runs on whichever thread lets go, possibly with the
    library's internal lock held: one dict operation (atomic under the GIL), no lock. Dropping
    the ctx may free tensors it kept, which calls the library on this thread (its lock is
    recursive)."""
    _contexts.pop(key, None)


def _keep_ctx(c_ctx, ctx):
    """Registers ctx under a new key and makes the key this application's state
    (ag_custom_ctx_set_state): backward and jvp find ctx there, and the library says when it
    is no longer needed (_release_ctx)."""
    key = next(_ctx_keys)
    _contexts[key] = ctx
    status = lib.ag_custom_ctx_set_state(c_ctx, key, _release_ctx)
    if status != OK:
        _contexts.pop(key, None)  # on failure destroy is not called
        check(status)


def _saved_and_ctx(c_ctx):
    """(ctx, saved tensors) in backward / jvp: the forward's ctx object when it kept one (the
    application's state), else a new one; the saved tensors as new owned Tensors."""
    count = c_int64(0)
    check(lib.ag_custom_ctx_saved_count(byref(count), c_ctx))
    saved = []
    for i in range(count.value):
        h = c_uint64(0)
        check(lib.ag_custom_ctx_saved(byref(h), c_ctx, i))
        saved.append(Tensor._wrap(h.value))
    state = c_void_p()
    check(lib.ag_custom_ctx_state(byref(state), c_ctx))
    ctx = _contexts.get(state.value) if state.value else None
    if ctx is None:
        ctx = FunctionCtx()
    for i in ctx._ag_none:
        saved.insert(i, None)
    return ctx, tuple(saved)


# ---------------------------------------------------------------------------------------------
# the trampolines
# ---------------------------------------------------------------------------------------------


class _Frame:
    """One apply in progress on this thread: which op its forward callback belongs to, and what
    that callback hands back (the output structure, or a run to reuse with another count)."""

    __slots__ = ("record_key", "entered", "stash", "retry_noutputs", "structure")

    def __init__(self):
        self.record_key = 0
        self.entered = False
        self.stash = None
        self.retry_noutputs = None
        self.structure = None


def _frames():
    frames = getattr(_tls, "frames", None)
    if frames is None:
        frames = _tls.frames = []
    return frames


def _claim_frame(key):
    """The apply this forward callback serves: the innermost apply on this thread, if it applies
    this op and its forward has not started yet (a replay's forward has no apply)."""
    frames = getattr(_tls, "frames", None)
    if frames:
        frame = frames[-1]
        if frame.record_key == key and not frame.entered:
            frame.entered = True
            return frame
    return None


def _fail(exc):
    """A callback's exception: kept for the call that sees AG_ERR_CALLBACK (which raises it
    again, chained), quoted in the library's message."""
    set_pending(exc, reraise=True)
    try:
        message = repr(exc)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the exception
        message = type(exc).__name__
    lib.ag_set_error(message.encode("utf-8", "replace"))
    return 1


def _contract(exc):
    lib.ag_set_error(str(exc).encode("utf-8", "replace"))
    return 1


def _spec(tensors, placeholders):
    """tensors with the placeholders replaced by ("input", k): what survives the callback."""
    out = []
    for t in tensors:
        k = next((k for k, p in enumerate(placeholders) if p is t), None)
        out.append(("input", k) if k is not None else ("tensor", t))
    return out


def _resolve(spec, placeholders):
    return [placeholders[v] if kind == "input" else v for kind, v in spec]


def _flatten(record, result):
    """(outputs, structure) of forward's result: a Tensor, or a tuple / list of Tensors."""
    if isinstance(result, Tensor):
        return [result], None
    if isinstance(result, (tuple, list)):
        items = list(result)
        if not items:
            raise _Contract(f"{record.name}.forward returned an empty {type(result).__name__}: "
                            "it must return a Tensor or a tuple of Tensors")
        for i, t in enumerate(items):
            if not isinstance(t, Tensor):
                raise _Contract(f"{record.name}.forward must return Tensors; output {i} is a "
                                f"{type(t).__name__}")
        return items, tuple
    raise _Contract(f"{record.name}.forward must return a Tensor or a tuple of Tensors, not "
                    f"{type(result).__name__}")


def _index_of(t, items):
    return next((k for k, s in enumerate(items) if s is t), None)


def _new_handle(t, record, what):
    """A new handle the library takes over for a gradient or tangent t: the same values and
    history (a reshape to its own shape: no copy)."""
    if not isinstance(t, Tensor):
        raise _Contract(f"{record.name}: {what} must be a Tensor or None, not "
                        f"{type(t).__name__}")
    shape = (c_int64 * MAX_NDIM)()
    ndim = c_int64(0)
    check(lib.ag_tensor_ndim(byref(ndim), t._handle))
    check(lib.ag_tensor_shape(shape, MAX_NDIM, t._handle))
    out = c_uint64(0)
    check(lib.ag_reshape(byref(out), t._handle, shape, ndim.value))
    return out.value


def _written(t, borrowed, handles, record, what):
    """The handle to write for a callback's result t: 0 for None, the library's own handle for
    a tensor it lent (an identity), else a new one."""
    if t is None:
        return 0
    k = _index_of(t, borrowed)
    if k is not None:
        return handles[k]
    return _new_handle(t, record, what)


@CUSTOM_FORWARD
def _forward_trampoline(outputs, noutputs, inputs, ninputs, c_ctx, payload):
    placeholders = [Tensor._wrap(inputs[i], owned=False) for i in range(ninputs)]
    kept = [weakref.ref(p) for p in placeholders]
    ctx = previous = result = outs = to_save = saved = args = None
    try:
        record = _records[payload]
        frame = _claim_frame(payload)
        if frame is not None and frame.stash is not None:
            # The second try of an apply whose forward gave another output count: its run.
            ctx, out_spec, save_spec, structure = frame.stash
            frame.stash = None
            outs = _resolve(out_spec, placeholders)
            to_save = _resolve(save_spec, placeholders)
            previous = ctx._ag_begin("forward", c_ctx, record)
        else:
            ctx = FunctionCtx()
            previous = ctx._ag_begin("forward", c_ctx, record)
            args = record.arguments(placeholders)
            if record.setup_context is not None:
                result = record.forward(*args)
                record.setup_context(ctx, tuple(args), result)
            else:
                result = record.forward(ctx, *args)
            args = None
            outs, structure = _flatten(record, result)
            to_save = ctx._ag_to_save or []
            if len(outs) != noutputs:
                if frame is None or len(outs) > MAX_ARITY:
                    raise _Contract(f"{record.name}.forward returned {len(outs)} outputs, "
                                    f"{noutputs} when the op was made (a compiled function's "
                                    "replay must give what its capture gave)")
                frame.stash = (ctx, _spec(outs, placeholders), _spec(to_save, placeholders),
                               structure)
                frame.retry_noutputs = len(outs)
                cls = record.cls()
                if cls is not None:
                    with _lock:
                        state = _classes.get(cls)
                        if state is not None:
                            state.noutputs = len(outs)
                ctx._ag_to_save = None
                return _contract(_Contract(f"{record.name}.forward returned {len(outs)} "
                                           f"outputs (applied again with that count)"))
        ctx._ag_to_save = None
        ctx._ag_none = tuple(i for i, t in enumerate(to_save) if t is None)
        saved = [t for t in to_save if t is not None]
        if saved:
            check(lib.ag_custom_ctx_save(c_ctx, (c_uint64 * len(saved))(*[t._handle for t in saved]),
                                         len(saved)))
        if ctx._ag_has_state():
            _keep_ctx(c_ctx, ctx)
        for k, t in enumerate(outs):
            j = _index_of(t, placeholders)
            if j is not None:
                outputs[k] = inputs[j]  # an identity: the library's own handle
                continue
            h = c_uint64(0)
            s = _index_of(t, saved)
            if s is not None:
                # A saved output must be the very tensor written: a new handle to it.
                check(lib.ag_custom_ctx_saved(byref(h), c_ctx, s))
            else:
                check(lib.ag_detach(byref(h), t._handle))  # its values, no copy
            outputs[k] = h.value
        if frame is not None:
            frame.structure = structure
        return 0
    except _Contract as exc:
        return _contract(exc)
    except BaseException as exc:  # noqa: BLE001 - raised again by the call that ran forward
        return _fail(exc)
    finally:
        if ctx is not None:
            ctx._ag_end(previous)
        # A forward that kept an argument (ctx.x = x) keeps a usable tensor: its values.
        del ctx, result, outs, to_save, saved, args, placeholders
        for ref in kept:
            adopt_if_kept(ref)


@CUSTOM_BACKWARD
def _backward_trampoline(input_grads, ninputs, output_grads, noutputs, c_ctx, payload):
    grads = [Tensor._wrap(output_grads[i], owned=False) for i in range(noutputs)]
    kept = [weakref.ref(g) for g in grads]
    ctx = previous = result = items = None
    try:
        record = _records[payload]
        ctx, saved = _saved_and_ctx(c_ctx)
        previous = ctx._ag_begin("backward", c_ctx, record, saved)
        del saved
        result = record.backward(ctx, *grads)
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        nargs = len(record.layout)
        if len(items) < nargs or any(g is not None for g in items[nargs:]):
            raise _Contract(f"{record.name}.backward returned {len(items)} gradients, forward "
                            f"took {nargs} arguments (return one per argument, None where "
                            "there is none)")
        flag = c_bool(False)
        j = 0
        for i, is_tensor in enumerate(record.layout):
            g = items[i]
            if not is_tensor:
                if g is not None:
                    raise _Contract(f"{record.name}.backward returned a gradient for argument "
                                    f"{i}, which is not a Tensor (return None for it)")
                continue
            if g is not None:
                check(lib.ag_custom_ctx_needs_input_grad(byref(flag), c_ctx, j))
                if flag.value:
                    input_grads[j] = _written(g, grads, output_grads, record,
                                              f"the gradient for argument {i}")
            j += 1
        return 0
    except _Contract as exc:
        return _contract(exc)
    except BaseException as exc:  # noqa: BLE001 - raised again by the call that ran backward
        return _fail(exc)
    finally:
        if ctx is not None:
            ctx._ag_end(previous)
        del ctx, result, items, grads
        for ref in kept:
            adopt_if_kept(ref)


@CUSTOM_JVP
def _jvp_trampoline(output_tangents, noutputs, inputs, input_tangents, ninputs, c_ctx, payload):
    primals = [Tensor._wrap(inputs[i], owned=False) for i in range(ninputs)]
    tangents = [Tensor._wrap(input_tangents[i], owned=False) if input_tangents[i] else None
                for i in range(ninputs)]
    kept = [weakref.ref(t) for t in primals + tangents if t is not None]
    ctx = previous = result = items = None
    try:
        record = _records[payload]
        ctx, saved = _saved_and_ctx(c_ctx)
        previous = ctx._ag_begin("jvp", c_ctx, record, saved)
        del saved
        per_arg, it = [], iter(tangents)
        for is_tensor in record.layout:
            per_arg.append(next(it) if is_tensor else None)
        result = record.jvp(ctx, *per_arg)
        del per_arg
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(items) != noutputs:
            raise _Contract(f"{record.name}.jvp returned {len(items)} tangents, forward has "
                            f"{noutputs} outputs (one per output, None for zeros)")
        borrowed = primals + [t for t in tangents if t is not None]
        handles = [inputs[i] for i in range(ninputs)] + \
                  [input_tangents[i] for i in range(ninputs) if input_tangents[i]]
        for k, t in enumerate(items):
            output_tangents[k] = _written(t, borrowed, handles, record,
                                          f"the tangent of output {k}")
        return 0
    except _Contract as exc:
        return _contract(exc)
    except BaseException as exc:  # noqa: BLE001 - raised again by the call that ran the JVP
        return _fail(exc)
    finally:
        if ctx is not None:
            ctx._ag_end(previous)
        del ctx, result, items, primals, tangents
        for ref in kept:
            adopt_if_kept(ref)


# ---------------------------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------------------------


class Function:
    """Base class of user-defined differentiable ops, as ``torch.autograd.Function``.

    Subclass it with static methods and apply it with ``MyOp.apply(*args)``:

    - ``forward(ctx, *args)``: computes the outputs any way it likes (library ops, NumPy, an
      external routine); runs with grad mode off. Returns one Tensor or a tuple of Tensors
      (one dtype). Tensor arguments are the op's inputs; other arguments are passed through.
      (Or, as PyTorch 2, ``forward(*args)`` with ``setup_context(ctx, inputs, output)``.)
    - ``backward(ctx, *grad_outputs)``: one gradient per output in (zeros for an output no
      gradient reached); returns one gradient per forward argument: a Tensor of the argument's
      dtype and shape (or a shape that broadcasting reduces to it), or None. Grad mode is on
      only in a create_graph pass: written with library ops, the backward is then recorded and
      differentiable. Optional (without it a backward through the op raises StateError).
      ``vjp`` is accepted as its name too.
    - ``jvp(ctx, *tangents)``: forward mode (``ag.jvp``, ``hvp``, ``hessian``, a forward-mode
      ``jacobian``): one tangent per argument in (None for non-Tensors and inputs without one),
      one per output out (None for zeros). Optional (without it forward mode raises
      StateError).

    ``ctx`` is a FunctionCtx: ``save_for_backward``, ``saved_tensors``, ``needs_input_grad``
    and attributes of your own, per application. Threads, capture (``ag.compile``), lifetimes
    and errors: see the module ``libautograd.function``. In short, an exception raised in a
    callback surfaces from the call that ran it (apply, backward, grad, ...) as itself, its
    ``__cause__`` the library's CallbackError; broken contracts (wrong counts, shapes, dtypes)
    are CallbackErrors.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} is applied with {type(self).__name__}.apply"
                        "(...), not instantiated")

    @staticmethod
    def forward(ctx, *args):
        """The op's value: see the class documentation. Must be overridden."""
        raise NotImplementedError("a Function subclass must define forward")

    @staticmethod
    def setup_context(ctx, inputs, output):
        """PyTorch 2 style: when overridden, forward takes no ctx and this fills it."""
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        """The vector-Jacobian product: see the class documentation."""
        raise NotImplementedError

    @staticmethod
    def vjp(ctx, *grad_outputs):
        """Another name for backward (as PyTorch's)."""
        raise NotImplementedError

    @staticmethod
    def jvp(ctx, *tangents):
        """The Jacobian-vector product: see the class documentation."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        """Applies the op to args: returns forward's output(s) as new Tensors (a Tensor, or a
        tuple when forward returned a tuple), recorded when grad mode is on and a Tensor
        argument requires grad."""
        if cls is Function:
            raise TypeError("apply is called on a subclass of Function")
        if kwargs:
            raise TypeError(f"{cls.__name__}.apply takes positional arguments only (as "
                            "torch.autograd.Function.apply)")
        if cls.forward is Function.forward:
            raise NotImplementedError(f"{cls.__name__} does not define forward")
        layout = tuple(isinstance(a, Tensor) for a in args)
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors:
            return _apply_without_tensors(cls, args)
        if len(tensors) > MAX_ARITY:
            raise ValueError(f"{cls.__name__}.apply: {len(tensors)} Tensor arguments, at most "
                             f"{MAX_ARITY}")
        constants = tuple(a for a in args if not isinstance(a, Tensor))
        with _lock:
            state = _classes.get(cls)
            noutputs = state.noutputs if state is not None else 1
        n = len(tensors)
        ins = (c_uint64 * n)(*[t._handle for t in tensors])
        frame = _Frame()
        frames = _frames()
        frames.append(frame)
        try:
            for attempt in (0, 1):
                op = _op_for(cls, layout, constants, noutputs)
                frame.record_key, frame.entered = op.record_key, False
                outs = (c_uint64 * noutputs)()
                take_pending()  # nothing stale may become this call's error
                status = lib.ag_custom_op_apply(outs, noutputs, op.handle, ins, n)
                if status == ERR_CALLBACK and frame.retry_noutputs is not None and attempt == 0:
                    _forget(cls, layout, constants, noutputs)
                    noutputs, frame.retry_noutputs = frame.retry_noutputs, None
                    continue
                check(status)
                break
        finally:
            frames.remove(frame)
            frame.stash = None
        results = tuple(Tensor._wrap(h) for h in outs)
        return results if frame.structure is tuple else results[0]


def _apply_without_tensors(cls, args):
    """No Tensor argument: nothing to differentiate; forward runs once, here."""
    record = _OpRecord(cls, _functions_of(cls), (False,) * len(args), args, 1)
    ctx = FunctionCtx()
    ctx._ag_needs = (False,) * len(args)
    previous = ctx._ag_begin("forward", 0, record)
    try:
        with no_grad():
            if record.setup_context is not None:
                result = record.forward(*args)
                record.setup_context(ctx, tuple(args), result)
            else:
                result = record.forward(ctx, *args)
    finally:
        ctx._ag_end(previous)
    try:
        outs, structure = _flatten(record, result)
    except _Contract as exc:
        raise TypeError(str(exc)) from None
    return tuple(outs) if structure is tuple else outs[0]
