"""Library-wide facts and settings: version, thread count, live handles, where it was loaded."""

from ctypes import byref, c_int64

from . import _accel, _library
from ._library import lib
from .errors import check
from .tensor import as_int


def version():
    """The C library's version, "MAJOR.MINOR.PATCH"."""
    return lib.ag_version().decode("ascii")


def library_path():
    """The path (or linker name) of the libautograd.so this package loaded."""
    return _library.path


def set_num_threads(n):
    """Sets how many threads the kernels and BLAS may use (1 to 256), process-wide.
    Results do not depend on it."""
    check(lib.ag_set_num_threads(as_int(n, "n")))


def num_threads():
    """The thread count the kernels use."""
    out = c_int64(0)
    check(lib.ag_num_threads(byref(out)))
    return out.value


get_num_threads = num_threads


def live_handle_count():
    """How many handles (tensors and optimizers) are alive, across all threads: for leak checks."""
    out = c_int64(0)
    check(lib.ag_live_handle_count(byref(out)))
    return out.value


def native_enabled():
    """Whether the compiled per-op path (the extension libautograd._native, built by pip install
    when a C compiler is present) is in use; False means pure Python over ctypes, either because
    the extension is missing or because LIBAUTOGRAD_PURE_PYTHON=1 was set at import. Both give
    the same results; the compiled path takes about a tenth of the time per scalar op."""
    return _accel.enabled()


def native_status():
    """One line saying which per-op path is in use, and why when it is the pure-Python one."""
    return _accel.status()
