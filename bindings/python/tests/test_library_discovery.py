"""Finding libautograd.so: the AUTOGRAD_LIBRARY variable, the search order, the build folder
and the error that lists where it looked. Imports are tested in fresh interpreters."""

import os
import subprocess
import sys

import pytest

import libautograd as ag

_library = sys.modules["libautograd._library"]
LOADED = os.path.realpath(ag.library_path())


def _python(code, env_updates, cwd):
    env = {k: v for k, v in os.environ.items() if k != "AUTOGRAD_LIBRARY"}
    env.update(env_updates)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


PRINT_PATH = "import libautograd as ag; print(ag.library_path()); print(ag.version())"


def test_env_var_with_a_file_or_a_directory(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    os.symlink(LOADED, folder / "libautograd.so")
    done = _python(PRINT_PATH, {"AUTOGRAD_LIBRARY": str(folder)}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(folder / "libautograd.so")
    assert done.stdout.splitlines()[1] == ag.version()

    os.symlink(LOADED, folder / "libautograd.so.0")  # the soname is preferred in a folder
    done = _python(PRINT_PATH, {"AUTOGRAD_LIBRARY": str(folder)}, tmp_path)
    assert done.stdout.splitlines()[0] == str(folder / "libautograd.so.0")

    done = _python(PRINT_PATH, {"AUTOGRAD_LIBRARY": LOADED}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == LOADED


def test_env_var_that_points_nowhere_is_a_clear_import_error(tmp_path):
    missing = tmp_path / "no" / "libautograd.so"
    done = _python(PRINT_PATH, {"AUTOGRAD_LIBRARY": str(missing)}, tmp_path)
    assert done.returncode != 0
    assert "LibraryNotFoundError" in done.stderr
    assert f"{missing} does not exist" in done.stderr
    assert "nothing else was tried" in done.stderr
    assert issubclass(ag.LibraryNotFoundError, ImportError)


def test_search_order(tmp_path):
    with_env = list(_library.candidates(environ={"AUTOGRAD_LIBRARY": str(tmp_path)},
                                        cwd=str(tmp_path), package_dir=str(tmp_path)))
    assert with_env == [("AUTOGRAD_LIBRARY", str(tmp_path / "libautograd.so.0")),
                        ("AUTOGRAD_LIBRARY", str(tmp_path / "libautograd.so"))]

    pkg = tmp_path / "site" / "libautograd"
    cwd = tmp_path / "work" / "sub"
    found = list(_library.candidates(environ={}, cwd=str(cwd), package_dir=str(pkg)))
    kinds = [how for how, _ in found]
    # installed places first, then build folders above the package, then above the cwd
    first_build = kinds.index("build folder above the package")
    assert all(not k.startswith("build folder") for k in kinds[:first_build])
    assert kinds.index("installed prefix") < first_build
    assert kinds[-1] == "build folder above the current directory"
    paths = [p for _, p in found if p]
    assert os.path.join(sys.prefix, "lib", "libautograd.so.0") in paths
    assert "/usr/local/lib/libautograd.so.0" in paths and "/usr/lib/libautograd.so" in paths
    assert str(pkg / ".build" / "release" / "libautograd.so.0") in paths
    assert str(cwd / ".build" / "release" / "libautograd.so") in paths
    assert str(tmp_path / "work" / ".build" / "release" / "libautograd.so") in paths
    assert paths.index(str(pkg / ".build/release/libautograd.so")) < \
        paths.index(str(cwd / ".build/release/libautograd.so"))


def _installed_copy_exists():
    for how, path in _library.candidates(environ={}, cwd="/", package_dir="/"):
        if how.startswith("build folder") or path is None:
            continue
        if os.sep in path and os.path.isfile(path):
            return path
        if os.sep not in path:
            # A linker name: the ldconfig cache may still name a removed file, so try it in a
            # fresh interpreter (here the soname is already loaded from the build folder).
            done = _python(f"import ctypes; ctypes.CDLL({path!r})", {}, "/")
            if done.returncode == 0:
                return path
    return None


def test_build_folder_above_the_current_directory(tmp_path):
    installed = _installed_copy_exists()
    if installed:
        pytest.skip(f"an installed copy ({installed}) comes before any build folder")
    build = tmp_path / "checkout" / ".build" / "release"
    build.mkdir(parents=True)
    os.symlink(LOADED, build / "libautograd.so")
    deep = tmp_path / "checkout" / "examples" / "deeper"
    deep.mkdir(parents=True)
    done = _python(PRINT_PATH, {}, deep)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(build / "libautograd.so")


def test_nothing_found_lists_every_place(tmp_path, monkeypatch):
    installed = _installed_copy_exists()
    if installed and os.sep in installed:
        pytest.skip(f"an installed copy ({installed}) would be found")
    # In this process the soname is loaded already, so a linker name would always "load":
    # let find_library know nothing, as in a fresh process without an installed copy.
    monkeypatch.setattr(_library.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(ag.LibraryNotFoundError) as info:
        _library.load(environ={}, cwd=str(tmp_path), package_dir=str(tmp_path / "pkg"))
    text = str(info.value)
    for fragment in ("pkg-config", "installed prefix", "/usr/local/lib", "/usr/lib",
                     "ctypes.util.find_library", "build folder above the package",
                     "build folder above the current directory", str(tmp_path),
                     "AUTOGRAD_LIBRARY"):
        assert fragment in text, fragment
