"""Finding and loading libautograd.so, and declaring the ctypes prototype of every C function.

The prototypes come from ``_prototypes.py``, generated from include/autograd.h by
``python3 scripts/catalogue.py --write``, so the argument and result types of each call are the
header's: handles are ``uint64_t`` (``c_uint64``) and are never squeezed through a C ``int``;
status codes are ``int32_t``.

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

from ._prototypes import (PROTOTYPES, ag_build_fn, ag_capture_fn, ag_custom_backward_fn,
                          ag_custom_forward_fn, ag_custom_jvp_fn, ag_grad_hook,
                          ag_post_accumulate_grad_hook, destroy_fn)

ENV_VAR = "AUTOGRAD_LIBRARY"
FILE_NAMES = ("libautograd.so.0", "libautograd.so")
BUILD_SUBDIR = os.path.join(".build", "release")


class LibraryNotFoundError(ImportError):
    """Raised at import when no loadable libautograd.so was found; says where it looked."""


# The callback types, under the names the package uses. PROTOTYPES (name: (restype, argtypes),
# every function of include/autograd.h) is generated from the header by scripts/catalogue.py.
GRAD_HOOK = ag_grad_hook
POST_ACCUMULATE_GRAD_HOOK = ag_post_accumulate_grad_hook
DESTROY = destroy_fn
BUILD_FN = ag_build_fn
CAPTURE_FN = ag_capture_fn
CUSTOM_FORWARD = ag_custom_forward_fn
CUSTOM_BACKWARD = ag_custom_backward_fn
CUSTOM_JVP = ag_custom_jvp_fn


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
