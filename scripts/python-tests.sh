#!/usr/bin/env bash
# Tests the Python package bindings/python (libautograd, over libautograd.so through ctypes):
#   1. builds the library if .build/release/libautograd.so is missing (scripts/build.sh),
#   2. installs numpy, pytest and jax with pip, only those that are missing,
#   3. installs the package for real (pip install ./bindings/python, not editable),
#   4. runs pytest on bindings/python/tests from a directory outside the repository (so the
#      installed package is tested, not the source tree), with AUTOGRAD_LIBRARY pointing at
#      .build/release,
#   5. runs examples/mlp.py,
#   6. checks that, from the repository root and without AUTOGRAD_LIBRARY, the package finds
#      the library in the build folder (unless an installed copy comes first: it says so),
#   7. installs the C library into a temporary prefix (make install) and checks that, outside
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

echo "python-tests: pytest bindings/python/tests"
AUTOGRAD_LIBRARY="$libdir" "$py" -m pytest -q -p no:cacheprovider "$root/bindings/python/tests" \
    || fail "pytest bindings/python/tests"

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
