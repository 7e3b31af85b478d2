"""Gradient hooks (ag_tensor_register_hook) and gradient-ready hooks
(ag_tensor_register_post_accumulate_grad_hook) with Python callables.

One C trampoline serves every hook of a kind: the C side gets a small integer key as user_data, and the
Python callable lives in a table under that key until the library calls the destroy callback
(when the hook is removed or its tensor is gone). So nothing that C can still call is ever
collected early.

The table takes no lock: a key comes from next() on a count and each access is one dict
operation, both atomic under the GIL. The destroy callback must not wait for anything: the
library may run it with its internal lock held, and it nests in itself (dropping a callable can
free the last owner of a tensor whose own hook's destroy then runs on the same thread), so a
Python lock there deadlocked.
"""

import itertools
import weakref
from ctypes import byref, c_int64, c_uint64

from ._library import DESTROY, GRAD_HOOK, POST_ACCUMULATE_GRAD_HOOK, lib
from .errors import OK, check, error_for, set_pending
from .tensor import Tensor, adopt_if_kept

_callables = {}  # user_data key -> the Python callable
_keys = itertools.count(1)


def _replacement_handle(result):
    """A new handle with result's values (and history), for the library to take over: the
    Python Tensor keeps its own handle, so the caller may go on using it."""
    out = c_uint64(0)
    status = lib.ag_mul_scalar(byref(out), result._handle, 1.0)
    if status:
        raise error_for(status)
    return out.value


@GRAD_HOOK
def _trampoline(replacement, grad, user_data):
    borrowed = Tensor._wrap(grad, owned=False)  # the library's handle: valid during the call
    kept = weakref.ref(borrowed)
    result = None
    try:
        fn = _callables[user_data]
        result = fn(borrowed)
        if result is None or result is borrowed:
            return 0
        if not isinstance(result, Tensor):
            raise TypeError(f"a gradient hook must return a Tensor or None, not "
                            f"{type(result).__name__}")
        replacement[0] = _replacement_handle(result)
        return 0
    except BaseException as exc:  # noqa: BLE001 - re-raised by errors.check as the __cause__
        set_pending(exc)
        return 1
    finally:
        # A hook that keeps its gradient (grads.append(g), as with PyTorch hooks) keeps a
        # usable tensor: the borrowed one gets its own handle if anything still refers to it.
        del borrowed, result
        adopt_if_kept(kept)


def _quote_in_library_error(exc):
    """Sets the library's last error (ag_set_error) to exc's repr, so that the CallbackError of
    the backward pass quotes it (the exception itself becomes that error's __cause__)."""
    try:
        message = repr(exc)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the exception
        message = type(exc).__name__
    lib.ag_set_error(message.encode("utf-8", "replace"))


def _adopt_leaf_if_kept(ref):
    """As adopt_if_kept, for the borrowed leaf a gradient-ready hook was given: if Python code
    kept it, it gets a handle of its own to a detached alias of the leaf (ag_detach: the same
    values, seen by both when either is updated in place; no gradient, no history). A copy
    recorded by x * 1 (what adopt_if_kept makes) would instead be a result of the leaf."""
    kept = ref()
    if kept is None or kept._owned:
        return
    out = c_uint64(0)
    if lib.ag_detach(byref(out), kept._handle) == OK:
        kept._handle, kept._owned = out.value, True


@POST_ACCUMULATE_GRAD_HOOK
def _post_accumulate_trampoline(t, user_data):
    borrowed = Tensor._wrap(t, owned=False)  # the library's handle to the leaf: valid during the call
    kept = weakref.ref(borrowed)
    result = None
    try:
        fn = _callables[user_data]
        result = fn(borrowed)
        if result is not None:
            raise TypeError(f"a post-accumulate-grad hook must return None, not "
                            f"{type(result).__name__} (write the gradient in place instead)")
        return 0
    except BaseException as exc:  # noqa: BLE001 - re-raised by errors.check as the __cause__
        set_pending(exc)
        _quote_in_library_error(exc)
        return 1
    finally:
        del borrowed, result
        _adopt_leaf_if_kept(kept)


@DESTROY
def _destroy(user_data):
    _callables.pop(user_data, None)  # may free tensors, whose hooks' destroy may run here again


class RemovableHook:
    """What register_hook and register_post_accumulate_grad_hook return: remove() unregisters
    the hook (a no-op once its tensor is gone, or when removed already)."""

    def __init__(self, tensor, hook_id):
        self._tensor = weakref.ref(tensor)
        self.id = hook_id
        self._removed = False

    def remove(self):
        """Unregisters the hook."""
        tensor = self._tensor()
        if self._removed or tensor is None:
            return
        self._removed = True
        check(lib.ag_tensor_remove_hook(tensor._handle, self.id))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    # A hook id belongs to its tensor's handle in this process: a copy would remove the same
    # hook, a pickle would name nothing elsewhere.
    def __copy__(self):
        raise TypeError("a hook handle cannot be copied or pickled: keep the one "
                        "register_hook / register_post_accumulate_grad_hook returned")

    def __deepcopy__(self, memo):
        self.__copy__()

    def __reduce_ex__(self, protocol):
        self.__copy__()


def _register(what, c_register, trampoline, tensor, fn):
    """Registers fn through c_register (one of the C registration functions) with trampoline;
    fn stays in _callables until the library calls _destroy."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what} needs a Tensor")
    if not callable(fn):
        raise TypeError(f"a hook must be callable, not {type(fn).__name__}")
    key = next(_keys)
    _callables[key] = fn
    out_id = c_int64(0)
    status = c_register(byref(out_id), tensor._handle, trampoline, key, _destroy)
    if status:
        _callables.pop(key, None)  # on failure destroy is not called
        check(status)
    return RemovableHook(tensor, out_id.value)


def register_hook(tensor, fn):
    """Registers fn(grad) -> Tensor | None on tensor; see Tensor.register_hook."""
    return _register("register_hook", lib.ag_tensor_register_hook, _trampoline, tensor, fn)


def register_post_accumulate_grad_hook(tensor, fn):
    """Registers fn(leaf) -> None on the leaf tensor; see Tensor.register_post_accumulate_grad_hook."""
    return _register("register_post_accumulate_grad_hook", lib.ag_tensor_register_post_accumulate_grad_hook,
                     _post_accumulate_trampoline, tensor, fn)


def live_hook_count():
    """How many Python hooks the library can still call (for leak checks in tests)."""
    return len(_callables)
