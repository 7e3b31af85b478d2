"""safetensors files and training checkpoints.

    ag.save_safetensors({"w": w, "b": b}, "model.safetensors", metadata={"epoch": "3"})
    tensors = ag.load_safetensors("model.safetensors")         # {"w": Tensor, "b": Tensor}
    with ag.safe_open("model.safetensors") as f:               # reads the header only
        f.keys(), f.metadata(), f.info("w"), f.get_tensor("w")

    ag.save_checkpoint("ckpt.safetensors", {"w": w, "b": b}, optimizer=opt, metadata={"epoch": "3"})
    meta = ag.load_checkpoint("ckpt.safetensors", {"w": w, "b": b}, optimizer=opt)

The files are the safetensors format that PyTorch, JAX, MLX and the PyPI ``safetensors`` package
read and write (float32, float64, int64 and bool tensors; a file's other dtypes are listed with
dtype None and refused on load). A file is untrusted input: a truncated file or a header that lies
raises ``FormatError`` (a ValueError), an unreadable or unwritable path ``FileError`` (an
OSError). Writing goes to a temporary file renamed over the path, so a failed save never leaves a
partial file.
"""

import os
from ctypes import byref, c_char_p, c_int32, c_int64, c_uint64

from . import dtypes as _dt
from ._library import lib
from .errors import check
from .tensor import Tensor, handle_from_data

__all__ = ["save_safetensors", "load_safetensors", "safe_open", "SafetensorsFile", "save_checkpoint",
           "load_checkpoint"]


def _path(path):
    """A path (str, bytes or os.PathLike) as the bytes the C library takes."""
    return os.fsencode(path)


def _text(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{what} must not contain a NUL character")
    return value.encode("utf-8")


def _named(tensors, what):
    """(names as a c_char_p array, tensors kept alive, handles as a uint64 array) of a mapping."""
    if not hasattr(tensors, "items"):
        raise TypeError(f"{what} must be a mapping of names to tensors, not {type(tensors).__name__}")
    names, kept = [], []
    for name, value in tensors.items():
        names.append(_text(name, "a tensor name"))
        kept.append(value if isinstance(value, Tensor) else Tensor._wrap(handle_from_data(value)))
    c_names = (c_char_p * max(len(names), 1))(*names)
    handles = (c_uint64 * max(len(kept), 1))(*[t._handle for t in kept])
    return c_names, kept, handles, len(names)


def _metadata(metadata):
    if metadata is None:
        metadata = {}
    if not hasattr(metadata, "items"):
        raise TypeError(f"metadata must be a mapping of str to str, not {type(metadata).__name__}")
    keys = [_text(k, "a metadata key") for k in metadata.keys()]
    values = [_text(v, f"the metadata value of {k!r}") for k, v in metadata.items()]
    n = len(keys)
    return (c_char_p * max(n, 1))(*keys), (c_char_p * max(n, 1))(*values), n


def save_safetensors(tensors, path, metadata=None):
    """Writes ``tensors`` (a mapping of names to Tensors or array-likes) to a safetensors file at
    ``path``, with ``metadata`` (a mapping of str to str) as its ``__metadata__``."""
    names, _kept, handles, n = _named(tensors, "tensors")
    keys, values, nmeta = _metadata(metadata)
    check(lib.ag_safetensors_save(_path(path), names, handles, n, keys, values, nmeta))


class SafetensorsFile:
    """An open safetensors file: its header read and checked, values read on ``get_tensor``.
    Use it as a context manager, or call ``close()``; ``safe_open(path)`` opens one."""

    _handle = 0

    def __init__(self, path=None, *, data=None):
        out = c_uint64(0)
        if (path is None) == (data is None):
            raise TypeError("SafetensorsFile takes a path or data=bytes, exactly one")
        if path is not None:
            check(lib.ag_safetensors_open(byref(out), _path(path)))
        else:
            buf = bytes(data)
            check(lib.ag_safetensors_open_memory(byref(out), buf, len(buf)))
        self._handle = out.value

    @classmethod
    def from_bytes(cls, data):
        """Opens a safetensors file held in memory (the bytes are copied)."""
        return cls(data=data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Closes the file (tensors already loaded live on). Closing twice does nothing."""
        handle, self._handle = self._handle, 0
        if handle:
            check(lib.ag_safetensors_close(handle))

    def __del__(self):
        if self._handle and lib is not None:
            lib.ag_safetensors_close(self._handle)
            self._handle = 0

    def _live(self):
        if not self._handle:
            raise ValueError("the safetensors file is closed")
        return self._handle

    def keys(self):
        """The tensor names, in the order of their data in the file."""
        h = self._live()
        n = c_int64(0)
        check(lib.ag_safetensors_count(byref(n), h))
        names = []
        for i in range(n.value):
            name = c_char_p()
            check(lib.ag_safetensors_name(byref(name), h, i))
            names.append(name.value.decode("utf-8"))
        return names

    def __contains__(self, name):
        return name in self.keys()

    def __len__(self):
        n = c_int64(0)
        check(lib.ag_safetensors_count(byref(n), self._live()))
        return n.value

    def metadata(self):
        """The file's ``__metadata__`` as a dict of str to str ({} when it has none)."""
        h = self._live()
        n = c_int64(0)
        check(lib.ag_safetensors_metadata_count(byref(n), h))
        out = {}
        for i in range(n.value):
            key, value = c_char_p(), c_char_p()
            check(lib.ag_safetensors_metadata_entry(byref(key), byref(value), h, i))
            out[key.value.decode("utf-8")] = value.value.decode("utf-8")
        return out

    def info(self, name):
        """(dtype, shape) of a tensor without reading its values; dtype is None for a dtype of
        the format that libautograd does not hold (F16, BF16, ...)."""
        dtype, ndim = c_int32(0), c_int64(0)
        shape = (c_int64 * 64)()
        check(lib.ag_safetensors_info(byref(dtype), byref(ndim), shape, 64, self._live(), _text(name, "name")))
        return (_dt.from_code(dtype.value) if dtype.value else None), tuple(shape[i] for i in range(min(ndim.value, 64)))

    def get_tensor(self, name):
        """A new Tensor holding the values of tensor ``name`` (read from the file now)."""
        out = c_uint64(0)
        check(lib.ag_safetensors_load(byref(out), self._live(), _text(name, "name")))
        return Tensor._wrap(out.value)


def safe_open(path):
    """Opens a safetensors file (as the PyPI package's ``safe_open``): ``with safe_open(p) as f``."""
    return SafetensorsFile(path)


def load_safetensors(path):
    """Every tensor of the safetensors file at ``path``, as a dict of names to Tensors (in file
    order)."""
    with SafetensorsFile(path) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def save_checkpoint(path, params, optimizer=None, metadata=None):
    """Saves the named parameters (a mapping of names to Tensors) and, if given, the optimizer's
    whole state (moments, step counts, learning rate) to a safetensors file at ``path``, with
    ``metadata`` (str to str; keys must not start with "autograd.") besides. Restoring it with
    ``load_checkpoint`` continues training exactly where it stopped."""
    names, _kept, handles, n = _named(params, "params")
    keys, values, nmeta = _metadata(metadata)
    check(lib.ag_checkpoint_save(_path(path), names, handles, n, 0 if optimizer is None else optimizer._handle,
                                 keys, values, nmeta))


def load_checkpoint(path, params, optimizer=None):
    """Restores a checkpoint saved by ``save_checkpoint``: writes each saved parameter's values
    into ``params[name]`` in place, and replaces the optimizer's state and learning rate; nothing
    changes unless everything fits. Returns the file's metadata (the caller's entries and the
    checkpoint's own "autograd." ones)."""
    names, kept, handles, n = _named(params, "params")
    for name, t in zip(params.keys(), kept):
        if t is not params[name]:
            raise TypeError(f"params[{name!r}] must be a Tensor to restore into, not {type(params[name]).__name__}")
    check(lib.ag_checkpoint_load(_path(path), names, handles, n, 0 if optimizer is None else optimizer._handle))
    with SafetensorsFile(path) as f:
        return f.metadata()

