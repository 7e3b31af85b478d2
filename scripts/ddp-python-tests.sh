#!/usr/bin/env bash
# Tests data-parallel training from Python (examples/ddp_digits.py over mpi4py) and the hook it
# is built on (Tensor.register_post_accumulate_grad_hook):
#   1. builds the library if .build/release/libautograd.so is missing (scripts/build.sh), unless
#      AUTOGRAD_LIBRARY is set: then that library is used (the package's own variable: a path
#      to libautograd.so or the folder holding it),
#   2. installs numpy, pytest and mpi4py with pip, only those that are missing (mpi4py needs an
#      MPI: Open MPI's mpirun and development files),
#   3. installs the package (pip install ./bindings/python, as python-tests.sh does),
#   4. trains with one process and with `mpirun -np 2`, and compares the final weights: the
#      largest absolute difference is printed and must be <= 1e-12 (the two runs round their
#      gradient sums in a different order; each run checks itself that its ranks end with
#      identical bits),
#   5. checks the all-reduce deadline: one rank stalls past --timeout, the other must abort
#      naming its rank, and mpirun must fail,
#   6. runs bindings/python/tests/test_post_accumulate_hook.py.
# Exits non-zero on any failure; the last line says which.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=python3
export PIP_ROOT_USER_ACTION=ignore  # pip runs as root here; its warning about that is noise

fail() {
    echo "ddp-python-tests: FAILED: $*" >&2
    exit 1
}

if [[ -z "${AUTOGRAD_LIBRARY:-}" ]]; then
    libdir="$root/.build/release"
    if [[ ! -f "$libdir/libautograd.so" ]]; then
        echo "ddp-python-tests: building the library (scripts/build.sh)"
        bash scripts/build.sh || fail "scripts/build.sh"
    fi
    export AUTOGRAD_LIBRARY="$libdir"
fi
echo "ddp-python-tests: AUTOGRAD_LIBRARY=$AUTOGRAD_LIBRARY"

command -v mpirun >/dev/null || fail "mpirun not found (install Open MPI)"
missing=()
for pair in numpy:numpy pytest:pytest mpi4py:mpi4py; do
    module=${pair%%:*} package=${pair##*:}
    "$py" -c "import $module" 2>/dev/null || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "ddp-python-tests: installing ${missing[*]}"
    "$py" -m pip install -q "${missing[@]}" || fail "pip install ${missing[*]}"
fi

echo "ddp-python-tests: pip install ./bindings/python"
"$py" -m pip install -q ./bindings/python || fail "pip install ./bindings/python"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"  # the installed package, not the source tree
"$py" -c 'import libautograd as ag; assert hasattr(ag.Tensor, "register_post_accumulate_grad_hook"); print("ddp-python-tests: library", ag.library_path())' ||
    fail "the installed package or its library lacks the post-accumulate-grad hook"

mpirun_args=(--oversubscribe -np 2 -x AUTOGRAD_LIBRARY)
[[ $(id -u) -eq 0 ]] && mpirun_args=(--allow-run-as-root "${mpirun_args[@]}")
example="$root/examples/ddp_digits.py"

echo "ddp-python-tests: one process"
timeout 120 "$py" "$example" --weights "$work/one.npy" || fail "ddp_digits.py with one process"

echo "ddp-python-tests: mpirun ${mpirun_args[*]}"
timeout 120 mpirun "${mpirun_args[@]}" "$py" "$example" --weights "$work/two.npy" ||
    fail "ddp_digits.py under mpirun -np 2"

"$py" - "$work/one.npy" "$work/two.npy" <<'PY' || fail "the one-process and two-rank weights differ by more than 1e-12"
import sys
import numpy as np
one, two = np.load(sys.argv[1]), np.load(sys.argv[2])
assert one.shape == two.shape == (64 * 128 + 128 + 128 * 10 + 10,), (one.shape, two.shape)
diff = float(np.max(np.abs(one - two)))
print(f"ddp-python-tests: max |weights(1 process) - weights(2 ranks)| = {diff:.3e} (limit 1e-12)")
sys.exit(0 if diff <= 1e-12 else 1)
PY

echo "ddp-python-tests: the deadline (rank 1 stalls 30 s, the timeout is 2 s)"
status=0
timeout 60 mpirun "${mpirun_args[@]}" "$py" "$example" --epochs 1 --timeout 2 --stall 1:30 \
    >"$work/stall.out" 2>&1 || status=$?
if [[ $status -eq 0 || $status -eq 124 ]] ||
    ! grep -q "rank 0 of 2: .* did not complete within 2 s" "$work/stall.out"; then
    cat "$work/stall.out"
    fail "a stalled rank did not make the other abort (exit $status)"
fi
grep "did not complete" "$work/stall.out"
echo "ddp-python-tests: mpirun exited $status"

echo "ddp-python-tests: pytest test_post_accumulate_hook.py"
"$py" -m pytest -q -p no:cacheprovider "$root/bindings/python/tests/test_post_accumulate_hook.py" ||
    fail "pytest test_post_accumulate_hook.py"

echo "ddp-python-tests: all passed"
