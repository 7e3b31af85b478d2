"""Finding and loading libautograd.so, and the ctypes prototype of every C function.

Everything that touches the raw C interface is declared here, once, so that the argument
and result types of each call are explicit: handles are ``uint64_t`` (``c_uint64``) and are
never squeezed through a C ``int``; status codes are ``int32_t``.

Where the library is looked for, in order (the first file that loads wins):

1. ``AUTOGRAD_LIBRARY``: the path of the shared library, or a directory holding it. When
   this variable is set, nothing else is tried: a wrong value is an error, not a silent
   fall-back to some other copy.
2. The installed prefix: ``pkg-config --variable=libdir autograd`` (when pkg-config and
   autograd.pc exist), then ``sys.prefix/lib``, ``/usr/local/lib``, ``/usr/lib``, then
   ``ctypes.util.find_library("autograd")`` (the dynamic linker's cache).
3. The build folder: ``.build/release/libautograd.so`` in a directory above this file,
   then in the current directory or one above it.

In each directory the soname ``libautograd.so.0`` is tried before ``libautograd.so``.
"""

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_uint64,
    c_void_p,
)

ENV_VAR = "AUTOGRAD_LIBRARY"
FILE_NAMES = ("libautograd.so.0", "libautograd.so")
BUILD_SUBDIR = os.path.join(".build", "release")


class LibraryNotFoundError(ImportError):
    """Raised at import when no loadable libautograd.so was found; says where it looked."""


# ---------------------------------------------------------------------------------------------
# C types of the header
# ---------------------------------------------------------------------------------------------

ag_status = c_int32
ag_dtype = c_int32
ag_init = c_int32
ag_jacobian_mode = c_int32
ag_tensor = c_uint64
ag_optimizer = c_uint64
P_tensor = POINTER(c_uint64)
P_int64 = POINTER(c_int64)

# typedef int32_t (*ag_grad_hook)(ag_tensor *replacement, ag_tensor grad, void *user_data);
GRAD_HOOK = CFUNCTYPE(c_int32, P_tensor, c_uint64, c_void_p)
# void (*destroy)(void *user_data)
DESTROY = CFUNCTYPE(None, c_void_p)
# typedef int32_t (*ag_build_fn)(ag_tensor *out, const ag_tensor *inputs, int64_t n, void *ud);
BUILD_FN = CFUNCTYPE(c_int32, P_tensor, P_tensor, c_int64, c_void_p)

_S = ag_status
_T = ag_tensor
_PT = P_tensor
_I = c_int64
_PI = P_int64
_D = c_double
_B = c_bool

# name: (restype, argtypes). Every exported function of include/autograd.h is here.
PROTOTYPES = {
    # versions, statuses, threads
    "ag_version": (c_char_p, []),
    "ag_last_error": (c_char_p, []),
    "ag_status_name": (c_char_p, [ag_status]),
    "ag_live_handle_count": (_S, [_PI]),
    "ag_set_num_threads": (_S, [_I]),
    "ag_num_threads": (_S, [_PI]),
    # creation, inspection, freeing
    "ag_tensor_from_data": (_S, [_PT, c_void_p, _PI, _I, ag_dtype]),
    "ag_tensor_zeros": (_S, [_PT, _PI, _I, ag_dtype]),
    "ag_tensor_ones": (_S, [_PT, _PI, _I, ag_dtype]),
    "ag_tensor_full": (_S, [_PT, _PI, _I, _D, ag_dtype]),
    "ag_tensor_arange": (_S, [_PT, _D, _D, _D, ag_dtype]),
    "ag_tensor_eye": (_S, [_PT, _I, _I, ag_dtype]),
    "ag_tensor_rand_uniform": (_S, [_PT, _PI, _I, _D, _D, c_uint64, ag_dtype]),
    "ag_tensor_rand_normal": (_S, [_PT, _PI, _I, _D, _D, c_uint64, ag_dtype]),
    "ag_tensor_free": (_S, [_T]),
    "ag_tensor_ndim": (_S, [_PI, _T]),
    "ag_tensor_shape": (_S, [_PI, _I, _T]),
    "ag_tensor_numel": (_S, [_PI, _T]),
    "ag_tensor_dtype": (_S, [POINTER(ag_dtype), _T]),
    "ag_tensor_copy_data": (_S, [c_void_p, _I, ag_dtype, _T]),
    "ag_tensor_data_ptr": (_S, [POINTER(c_void_p), _T]),
    "ag_tensor_item": (_S, [POINTER(c_double), _T]),
    "ag_tensor_set_requires_grad": (_S, [_T, _B]),
    "ag_tensor_requires_grad": (_S, [POINTER(c_bool), _T]),
    "ag_tensor_grad": (_S, [_PT, _T]),
    "ag_tensor_zero_grad": (_S, [_T]),
    "ag_tensor_copy_": (_S, [_T, _T]),
    # binary operations
    "ag_add": (_S, [_PT, _T, _T]),
    "ag_sub": (_S, [_PT, _T, _T]),
    "ag_mul": (_S, [_PT, _T, _T]),
    "ag_div": (_S, [_PT, _T, _T]),
    "ag_matmul": (_S, [_PT, _T, _T]),
    "ag_pow": (_S, [_PT, _T, _T]),
    "ag_maximum": (_S, [_PT, _T, _T]),
    "ag_minimum": (_S, [_PT, _T, _T]),
    "ag_dot": (_S, [_PT, _T, _T]),
    "ag_outer": (_S, [_PT, _T, _T]),
    "ag_mse_loss": (_S, [_PT, _T, _T]),
    "ag_eq": (_S, [_PT, _T, _T]),
    "ag_ne": (_S, [_PT, _T, _T]),
    "ag_lt": (_S, [_PT, _T, _T]),
    "ag_le": (_S, [_PT, _T, _T]),
    "ag_gt": (_S, [_PT, _T, _T]),
    "ag_ge": (_S, [_PT, _T, _T]),
    # scalar forms
    "ag_add_scalar": (_S, [_PT, _T, _D]),
    "ag_sub_scalar": (_S, [_PT, _T, _D]),
    "ag_rsub_scalar": (_S, [_PT, _T, _D]),
    "ag_mul_scalar": (_S, [_PT, _T, _D]),
    "ag_div_scalar": (_S, [_PT, _T, _D]),
    "ag_rdiv_scalar": (_S, [_PT, _T, _D]),
    "ag_pow_scalar": (_S, [_PT, _T, _D]),
    "ag_rpow_scalar": (_S, [_PT, _T, _D]),
    "ag_maximum_scalar": (_S, [_PT, _T, _D]),
    "ag_minimum_scalar": (_S, [_PT, _T, _D]),
    # unary operations
    "ag_neg": (_S, [_PT, _T]),
    "ag_exp": (_S, [_PT, _T]),
    "ag_log": (_S, [_PT, _T]),
    "ag_relu": (_S, [_PT, _T]),
    "ag_sqrt": (_S, [_PT, _T]),
    "ag_abs": (_S, [_PT, _T]),
    "ag_sin": (_S, [_PT, _T]),
    "ag_cos": (_S, [_PT, _T]),
    "ag_tanh": (_S, [_PT, _T]),
    "ag_sigmoid": (_S, [_PT, _T]),
    "ag_gelu": (_S, [_PT, _T]),
    "ag_softplus": (_S, [_PT, _T]),
    "ag_leaky_relu": (_S, [_PT, _T, _D]),
    # reductions
    "ag_sum": (_S, [_PT, _T, _PI, _I, _B]),
    "ag_mean": (_S, [_PT, _T, _PI, _I, _B]),
    "ag_max": (_S, [_PT, _T, _PI, _I, _B]),
    "ag_min": (_S, [_PT, _T, _PI, _I, _B]),
    "ag_logsumexp": (_S, [_PT, _T, _PI, _I, _B]),
    "ag_var": (_S, [_PT, _T, _PI, _I, _I, _B]),
    # shape operations
    "ag_reshape": (_S, [_PT, _T, _PI, _I]),
    "ag_transpose": (_S, [_PT, _T, _I, _I]),
    "ag_permute": (_S, [_PT, _T, _PI, _I]),
    "ag_expand": (_S, [_PT, _T, _PI, _I]),
    "ag_squeeze": (_S, [_PT, _T, _PI, _I]),
    "ag_unsqueeze": (_S, [_PT, _T, _I]),
    "ag_concat": (_S, [_PT, _PT, _I, _I]),
    "ag_stack": (_S, [_PT, _PT, _I, _I]),
    "ag_slice": (_S, [_PT, _T, _I, _I, _I, _I]),
    "ag_index_select": (_S, [_PT, _T, _I, _PI, _I]),
    "ag_gather": (_S, [_PT, _T, _I, _PI, _PI, _I]),
    # neural-network functions
    "ag_softmax": (_S, [_PT, _T, _I]),
    "ag_log_softmax": (_S, [_PT, _T, _I]),
    "ag_cross_entropy": (_S, [_PT, _T, _PI, _I]),
    "ag_linear": (_S, [_PT, _T, _T, _T]),
    "ag_where": (_S, [_PT, _T, _T, _T]),
    # backward, grad mode, detach, hooks
    "ag_backward": (_S, [_T, _T, _B, _B]),
    "ag_grad": (_S, [_PT, _PT, _I, _PT, _PT, _I, _B, _B, _B]),
    "ag_set_grad_enabled": (_S, [POINTER(c_bool), _B]),
    "ag_is_grad_enabled": (_S, [POINTER(c_bool)]),
    "ag_detach": (_S, [_PT, _T]),
    "ag_tensor_register_hook": (_S, [_PI, _T, GRAD_HOOK, c_void_p, DESTROY]),
    "ag_tensor_remove_hook": (_S, [_T, _I]),
    # gradient checking and pictures
    "ag_gradcheck": (
        _S,
        [POINTER(c_bool), _PI, _PI, POINTER(c_double), POINTER(c_double), BUILD_FN, c_void_p,
         _PT, _I, _D, _D, _D],
    ),
    "ag_graph_to_dot": (_S, [c_char_p, _I, _PI, _T]),
    # function transforms
    "ag_jvp": (_S, [_PT, _PT, BUILD_FN, c_void_p, _PT, _I, _PT]),
    "ag_vjp": (_S, [_PT, _PT, BUILD_FN, c_void_p, _PT, _I, _T]),
    "ag_jacobian": (_S, [_PT, BUILD_FN, c_void_p, _T, ag_jacobian_mode]),
    "ag_hvp": (_S, [_PT, BUILD_FN, c_void_p, _T, _T]),
    "ag_hessian": (_S, [_PT, BUILD_FN, c_void_p, _T]),
    # initialisers and optimizers
    "ag_tensor_init": (_S, [_PT, _PI, _I, ag_init, c_uint64, ag_dtype]),
    "ag_optimizer_sgd": (_S, [POINTER(ag_optimizer), _PT, _I, _D, _D, _B, _D]),
    "ag_optimizer_adam": (_S, [POINTER(ag_optimizer), _PT, _I, _D, _D, _D, _D, _D]),
    "ag_optimizer_adamw": (_S, [POINTER(ag_optimizer), _PT, _I, _D, _D, _D, _D, _D]),
    "ag_optimizer_step": (_S, [ag_optimizer]),
    "ag_optimizer_zero_grad": (_S, [ag_optimizer]),
    "ag_optimizer_set_lr": (_S, [ag_optimizer, _D]),
    "ag_optimizer_lr": (_S, [POINTER(c_double), ag_optimizer]),
    "ag_optimizer_free": (_S, [ag_optimizer]),
}


def _declare(lib):
    """Sets restype/argtypes of every function in PROTOTYPES on the loaded library."""
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)  # AttributeError here means an older or foreign library
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


def _files_in(directory):
    return [os.path.join(directory, name) for name in FILE_NAMES]


def _pkg_config_libdir():
    """The libdir that pkg-config reports for autograd.pc, or None (no pkg-config, no .pc)."""
    exe = shutil.which("pkg-config")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "--variable=libdir", "autograd"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    libdir = done.stdout.strip()
    return libdir if done.returncode == 0 and libdir else None


def _build_folders(start):
    """`.build/release` in start and in each directory above it, nearest first."""
    found = []
    here = os.path.abspath(start)
    while True:
        found.append(os.path.join(here, BUILD_SUBDIR))
        parent = os.path.dirname(here)
        if parent == here:
            return found
        here = parent


def candidates(environ=None, cwd=None, package_dir=None, use_pkg_config=True):
    """The places to try, in order, as (how it was found, path or linker name) pairs.

    A generator, so that pkg-config and find_library only run when the earlier places had
    nothing. Arguments default to the real environment, current directory and this package's
    folder; tests pass their own to check the order without touching the process state.
    """
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    package_dir = os.path.dirname(os.path.abspath(__file__)) if package_dir is None else package_dir

    override = environ.get(ENV_VAR)
    if override:
        override = os.path.abspath(override)
        if os.path.isdir(override):
            for path in _files_in(override):
                yield ENV_VAR, path
        else:
            yield ENV_VAR, override
        return  # an explicit choice is never second-guessed

    if use_pkg_config:
        libdir = _pkg_config_libdir()
        if libdir:
            for path in _files_in(libdir):
                yield "pkg-config libdir", path
        else:
            yield "pkg-config", None  # no pkg-config, or no autograd.pc
    for prefix_lib in (os.path.join(sys.prefix, "lib"), "/usr/local/lib", "/usr/lib"):
        for path in _files_in(prefix_lib):
            yield "installed prefix", path
    linker_name = ctypes.util.find_library("autograd")
    if linker_name:
        yield "ctypes.util.find_library", linker_name
    else:
        yield "ctypes.util.find_library", None
    for folder in _build_folders(package_dir):
        for path in _files_in(folder):
            yield "build folder above the package", path
    for folder in _build_folders(cwd):
        for path in _files_in(folder):
            yield "build folder above the current directory", path


def _describe(tried):
    """Renders the attempts, one line per kind of place (in search order), plus one line for
    each file that was found but failed to load."""
    order, missing, lines = [], {}, []
    for how, path, reason in tried:
        if how not in order:
            order.append(how)
        if path is None:
            lines.append((how, f"  {how}: knows of no autograd library"))
        elif reason is None:
            folders = missing.setdefault(how, [])
            folder = os.path.dirname(path)
            if folder not in folders:
                folders.append(folder)
        else:
            lines.append((how, f"  {how}: {path} could not be loaded: {reason}"))
    rendered = []
    for how in order:
        folders = missing.get(how)
        if folders and how == ENV_VAR and len(tried) == 1:
            rendered.append(f"  {how}: {tried[0][1]} does not exist")
        elif folders and how.startswith("build folder"):
            top = os.path.dirname(os.path.dirname(folders[0]))
            rendered.append(f"  {how}: no .build/release in {top} or any directory above it")
        elif folders:
            rendered.append(f"  {how}: not in {', '.join(folders)}")
        rendered.extend(line for h, line in lines if h == how)
    return "\n".join(rendered) if rendered else "  (nowhere)"


def load(environ=None, cwd=None, package_dir=None, use_pkg_config=True):
    """Loads the first candidate that exists and loads; returns (CDLL with prototypes, path).

    Raises LibraryNotFoundError listing every place tried (and why a found file failed).
    """
    environ = os.environ if environ is None else environ
    tried = []
    for how, path in candidates(environ, cwd, package_dir, use_pkg_config):
        if path is None:
            tried.append((how, None, None))
            continue
        is_linker_name = os.sep not in path
        if not is_linker_name and not os.path.isfile(path):
            tried.append((how, path, None))
            continue
        try:
            lib = ctypes.CDLL(path)
            _declare(lib)
        except (OSError, AttributeError) as exc:
            tried.append((how, path, exc))
            continue
        return lib, path
    if environ.get(ENV_VAR):
        hint = f"{ENV_VAR}={environ.get(ENV_VAR)!r} is set, so nothing else was tried."
    else:
        hint = (f"Set {ENV_VAR} to the library's path (or its folder), install it "
                "(make install), or build it (bash scripts/build.sh).")
    raise LibraryNotFoundError(
        f"libautograd.so was not found (looked for {' and '.join(FILE_NAMES)}):\n"
        f"{_describe(tried)}\n{hint}")


lib, path = load()
