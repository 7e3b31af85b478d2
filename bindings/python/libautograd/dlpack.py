"""DLPack: zero-copy exchange with NumPy, PyTorch, JAX and every array library that speaks it.

    a = numpy.from_dlpack(t)        # t a libautograd Tensor: a shares t's memory
    u = torch.from_dlpack(t)        # likewise
    t = ag.from_dlpack(a)           # a NumPy array, a torch tensor, ...: t shares a's memory

Both directions share memory, nothing is copied: a write on one side is seen on the other. The
library's version counters cannot see a write made by the other side; after such a write, call
``t.mark_modified()`` so that a graph that saved t's old values refuses a backward (StateError)
instead of mixing old and new values. Only row-major contiguous CPU arrays of float32, float64,
int64 or bool import; other layouts raise ArgumentError (a ValueError): make them contiguous
first (``numpy.ascontiguousarray``, ``torch.Tensor.contiguous``), or pass ``copy=True``.

The capsules follow the Python array API: ``Tensor.__dlpack__(max_version=(1, x))`` gives a
"dltensor_versioned" capsule (DLPack 1.x), without max_version the older "dltensor" one; a
consumer renames the capsule it used, and a capsule never consumed frees its tensor when
collected.
"""

import ctypes
from ctypes import byref, c_char_p, c_int, c_uint64, c_void_p

from ._library import lib
from .errors import check

__all__ = ["from_dlpack"]

KDL_CPU = 1
KDL_CUDA_HOST = 3

# Capsule names: module constants, because a capsule keeps the pointer to its name, not a copy.
_VERSIONED = b"dltensor_versioned"
_USED_VERSIONED = b"used_dltensor_versioned"
_UNVERSIONED = b"dltensor"
_USED_UNVERSIONED = b"used_dltensor"

_api = ctypes.pythonapi
_Destructor = ctypes.CFUNCTYPE(None, c_void_p)
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, c_void_p, c_char_p, _Destructor)(("PyCapsule_New", _api))
_capsule_is_valid = ctypes.PYFUNCTYPE(c_int, ctypes.py_object, c_char_p)(("PyCapsule_IsValid", _api))
_capsule_pointer = ctypes.PYFUNCTYPE(c_void_p, ctypes.py_object, c_char_p)(("PyCapsule_GetPointer", _api))
_capsule_set_name = ctypes.PYFUNCTYPE(c_int, ctypes.py_object, c_char_p)(("PyCapsule_SetName", _api))
# The destructor receives the capsule as a raw PyObject * (its reference count is already 0),
# so these two take the pointer as a plain address.
_raw_is_valid = ctypes.PYFUNCTYPE(c_int, c_void_p, c_char_p)(("PyCapsule_IsValid", _api))
_raw_pointer = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_char_p)(("PyCapsule_GetPointer", _api))

# The deleter is the first pointer-sized field after a fixed prefix: DLManagedTensorVersioned is
# {DLPackVersion version (8 bytes); void *manager_ctx; void (*deleter)(self); ...} and
# DLManagedTensor is {DLTensor dl_tensor (48 bytes on 64-bit); void *manager_ctx; deleter}.
_DELETER_OFFSET = {_VERSIONED: 16, _UNVERSIONED: 48 + 8}
_Deleter = ctypes.CFUNCTYPE(None, c_void_p)


def _call_deleter(managed, name):
    """Calls managed->deleter(managed), if the producer set one."""
    address = ctypes.c_void_p.from_address(managed + _DELETER_OFFSET[name]).value
    if address:
        _Deleter(address)(managed)


@_Destructor
def _capsule_destructor(capsule):
    # A capsule nobody consumed still owns its tensor: free it. A consumed one was renamed.
    for name in (_VERSIONED, _UNVERSIONED):
        if _raw_is_valid(capsule, name):
            _call_deleter(_raw_pointer(capsule, name), name)
            return


def to_capsule(tensor, versioned):
    """A DLPack capsule over ``tensor``'s memory (the Tensor.__dlpack__ protocol)."""
    managed = c_void_p(0)
    if versioned:
        check(lib.ag_tensor_to_dlpack(byref(managed), tensor._handle))
        name = _VERSIONED
    else:
        check(lib.ag_tensor_to_dlpack_unversioned(byref(managed), tensor._handle))
        name = _UNVERSIONED
    try:
        return _capsule_new(managed.value, name, _capsule_destructor)
    except BaseException:
        _call_deleter(managed.value, name)
        raise


def from_capsule(capsule):
    """A new Tensor sharing the memory of a DLPack capsule, which is consumed (renamed)."""
    from .tensor import Tensor

    out = c_uint64(0)
    if _capsule_is_valid(capsule, _VERSIONED):
        managed = _capsule_pointer(capsule, _VERSIONED)
        check(lib.ag_tensor_from_dlpack(byref(out), managed))
        _capsule_set_name(capsule, _USED_VERSIONED)
    elif _capsule_is_valid(capsule, _UNVERSIONED):
        managed = _capsule_pointer(capsule, _UNVERSIONED)
        check(lib.ag_tensor_from_dlpack_unversioned(byref(out), managed))
        _capsule_set_name(capsule, _USED_UNVERSIONED)
    else:
        raise TypeError("not an unused DLPack capsule (\"dltensor_versioned\" or \"dltensor\"): it was "
                        "consumed already, or is not a DLPack capsule")
    return Tensor._wrap(out.value)


def from_dlpack(x, *, copy=None, device=None):
    """A Tensor sharing the memory of ``x``: any object with ``__dlpack__`` (a NumPy array, a
    torch tensor, a JAX array on the CPU, a libautograd Tensor) or a DLPack capsule.

    ``copy=True`` returns a copy instead; ``copy=False`` or None shares (a layout that cannot be
    shared is an ArgumentError either way, unless copy=True). ``device`` must be None or "cpu".
    """
    from .tensor import Tensor

    if device not in (None, "cpu"):
        raise ValueError(f"libautograd tensors live on the CPU; device {device!r} is not supported")
    if copy:
        import numpy as np

        return Tensor(np.array(np.from_dlpack(x), copy=True))
    if not hasattr(x, "__dlpack__"):
        return from_capsule(x)
    if hasattr(x, "__dlpack_device__"):
        kind = int(x.__dlpack_device__()[0])
        if kind not in (KDL_CPU, KDL_CUDA_HOST):
            raise BufferError(f"from_dlpack: the array lives on DLPack device type {kind}; libautograd reads CPU memory only")
    try:
        capsule = x.__dlpack__(max_version=(1, 1))
    except TypeError:  # a producer older than the max_version keyword
        capsule = x.__dlpack__()
    return from_capsule(capsule)
