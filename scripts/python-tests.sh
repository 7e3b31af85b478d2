#!/usr/bin/env bash
# Tests the Python package bindings/python (libautograd, over libautograd.so through ctypes, with
# its per-op path compiled at install time, the extension libautograd._native):
#   1. builds the library if .build/release/libautograd.so is missing (scripts/build.sh),
#   2. installs numpy, pytest and jax with pip, only those that are missing,
#   3. installs the package for real (pip install ./bindings/python, not editable), which
#      compiles the extension, and fails unless the installed package uses it,
#   4. runs pytest on bindings/python/tests from a directory outside the repository (so the
#      installed package is tested, not the source tree), with AUTOGRAD_LIBRARY pointing at
#      .build/release,
#   5. runs a fast subset of them again on the pure-Python path (LIBAUTOGRAD_PURE_PYTHON=1),
#      and installs the package once more with no C compiler (CC=false, into a temporary
#      folder) to check that it still installs and works, without the extension,
#   6. runs README.md's Python program (checking its printed values) and examples/mlp.py,
#   7. checks that, from the repository root and without AUTOGRAD_LIBRARY, the package finds
#      the library in the build folder (unless an installed copy comes first: it says so),
#   8. installs the C library into a temporary prefix (make install) and checks that, outside
#      the repository, the package finds it there through pkg-config and computes a gradient.
# Exits non-zero on any failure; the last line says which.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
libdir="$root/.build/release"
py=python3
export PIP_ROOT_USER_ACTION=ignore  # pip runs as root here; its warning about that is noise

fail() {
    echo "python-tests: FAILED: $*" >&2
    exit 1
}

if [[ ! -f "$libdir/libautograd.so" ]]; then
    echo "python-tests: building the library (scripts/build.sh)"
    bash scripts/build.sh || fail "scripts/build.sh"
fi

missing=()
for pair in numpy:numpy pytest:pytest jax:jax; do
    module=${pair%%:*} package=${pair##*:}
    "$py" -c "import $module" 2>/dev/null || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "python-tests: installing ${missing[*]}"
    "$py" -m pip install -q "${missing[@]}" || fail "pip install ${missing[*]}"
fi

echo "python-tests: pip install ./bindings/python"
# A local directory is always rebuilt and reinstalled, so the tests see the current source.
"$py" -m pip install -q ./bindings/python || fail "pip install ./bindings/python"

outside=$(mktemp -d)
trap 'rm -rf "$outside"' EXIT
cd "$outside"
# The package must come from site-packages, not from the checkout.
where=$(AUTOGRAD_LIBRARY="$libdir" "$py" -c 'import libautograd; print(libautograd.__file__)')
case "$where" in
    "$root"/*) fail "libautograd was imported from the source tree ($where), not the install" ;;
esac
echo "python-tests: package at $where"
# The compiled per-op path must be what the installed package uses (a failed compilation would
# otherwise go unnoticed: the package falls back to pure Python, only slower).
status=$(env -u LIBAUTOGRAD_PURE_PYTHON AUTOGRAD_LIBRARY="$libdir" "$py" -c '
import libautograd as ag
print(ag.native_status())
raise SystemExit(0 if ag.native_enabled() else 1)') ||
    fail "the installed package does not use its compiled extension: $status"
echo "python-tests: $status"

echo "python-tests: pytest bindings/python/tests"
AUTOGRAD_LIBRARY="$libdir" "$py" -m pytest -q -p no:cacheprovider "$root/bindings/python/tests" \
    || fail "pytest bindings/python/tests"

echo "python-tests: the pure-Python path (LIBAUTOGRAD_PURE_PYTHON=1): test_semantics.py, test_number_protocol.py, test_native.py"
tests=$root/bindings/python/tests
LIBAUTOGRAD_PURE_PYTHON=1 AUTOGRAD_LIBRARY="$libdir" "$py" -m pytest -q -p no:cacheprovider \
    "$tests/test_semantics.py" "$tests/test_number_protocol.py" "$tests/test_native.py" \
    || fail "pytest on the pure-Python path (LIBAUTOGRAD_PURE_PYTHON=1)"

echo "python-tests: installing without a C compiler (CC=false) into a temporary folder"
# setuptools skips the optional extension when it cannot be compiled; the package then works on
# the pure-Python path. From a copy of the sources: the in-tree build folder of the install above
# holds a compiled extension that setuptools would reuse.
mkdir "$outside/src"
cp -r "$root"/bindings/python/{pyproject.toml,setup.py,README.md,libautograd} "$outside/src/"
rm -rf "$outside"/src/libautograd/*.so "$outside/src/libautograd/__pycache__"
CC=false "$py" -m pip install -q --no-deps --target "$outside/no-compiler" \
    "$outside/src" >"$outside/no-compiler.log" 2>&1 ||
    { cat "$outside/no-compiler.log"; fail "pip install without a C compiler"; }
status=$(PYTHONPATH="$outside/no-compiler" AUTOGRAD_LIBRARY="$libdir" "$py" -c '
import libautograd as ag
assert "no-compiler" in ag.__file__, ag.__file__
x = ag.tensor([1., 2., 3.], requires_grad=True)
(ag.tanh(x) * x + 1.0).sum().backward()
print(ag.native_enabled(), ag.native_status())') || fail "the package installed without a compiler does not work"
case "$status" in
    False*) echo "python-tests: installed and working without the extension: ${status#False }" ;;
    *) fail "expected the pure-Python path without a compiler, got: $status" ;;
esac

echo "python-tests: README.md's Python program"
readme_py=$(mktemp -d)/readme.py
"$py" - "$root/README.md" "$readme_py" <<'PY'
import sys
text = open(sys.argv[1]).read()
section = text[text.index("## Using it from Python"):]
program = section.split("```python\n", 1)[1].split("```", 1)[0]
open(sys.argv[2], "w").write(program)
PY
readme_out=$(cd "$(dirname "$readme_py")" && AUTOGRAD_LIBRARY="$libdir" "$py" "$readme_py") || fail "README.md's Python program"
echo "$readme_out"
# By hand (bindings/c/example.c's derivation): f = 14.25, df/dx = dz W^T, df/dW = x^T dz.
[ "$readme_out" = "14.25
[[1.0, 3.0, -1.0], [-2.0, 0.5, 4.0]]
[[2.0, 1.0], [4.0, -3.0], [-2.0, 4.0]]
AG_ERR_SHAPE: ag_matmul: inner extents differ: [2, 3] @ [2, 3]" ] || fail "README.md's Python program printed something else"

echo "python-tests: examples/mlp.py"
AUTOGRAD_LIBRARY="$libdir" "$py" "$root/examples/mlp.py" | tail -n 3 || fail "examples/mlp.py"

echo "python-tests: discovery from the repository root without AUTOGRAD_LIBRARY"
cd "$root"
found=$(env -u AUTOGRAD_LIBRARY "$py" -c 'import libautograd as ag; print(ag.library_path())') \
    || fail "import libautograd from the repository root without AUTOGRAD_LIBRARY"
case "$found" in
    "$libdir"/*) echo "python-tests: found the build folder's library: $found" ;;
    *) echo "python-tests: note: an installed copy comes first in the search order: $found" ;;
esac

echo "python-tests: discovery through an installed prefix (make install, pkg-config), outside the repository"
prefix="$outside/prefix"
make --no-print-directory -C "$root" install PREFIX="$prefix" NO_BUILD=1 >/dev/null || fail "make install PREFIX=$prefix"
cd "$outside"
found=$(env -u AUTOGRAD_LIBRARY PKG_CONFIG_PATH="$prefix/lib/pkgconfig" "$py" -c '
import libautograd as ag
x = ag.tensor([1., 2., 3.], requires_grad=True)
y = ag.tensor([4., 5., 6.], requires_grad=True)
((x * y).sum()).backward()
assert list(x.grad.numpy()) == [4.0, 5.0, 6.0], x.grad
print(ag.library_path())') || fail "import libautograd with only the installed prefix to find the library"
case "$found" in
    "$prefix"/lib/*) echo "python-tests: found the installed library: $found" ;;
    *) fail "expected the library under $prefix/lib, found $found" ;;
esac

echo "python-tests: all passed"
