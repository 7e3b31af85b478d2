#!/usr/bin/env bash
# Builds and tests the data-parallel layer over MPI (bindings/mpi/autograd_ddp.c) with its
# example, examples/ddp_digits.c, after bindings/mpi/test_ddp.c's edge cases on 2 ranks:
#   a. trains on 1 rank and writes the final weights;
#   b. trains on 2 ranks: the weights must match the 1-rank run within 1e-12 (max abs difference;
#      the sums are grouped differently, so not bit for bit) and be identical on both ranks;
#   c. 2 ranks with --rank-order (sums in rank order), and with --no-overlap: the same bits as (b)
#      (for 2 ranks both sum orders give g_0 + g_1; overlapping must not change any value);
#   d. fault injection: rank 1 exits, crashes, or hangs at step 30; the surviving rank must stop
#      with a clear message and mpirun with a non-zero status within 30 s (the hang with
#      AG_DDP_TIMEOUT=5);
#   e. runs 1 epoch on 1 rank under valgrind: no memcheck error and no definite or indirect leak,
#      apart from Open MPI's own (bindings/mpi/openmpi.supp suppresses only blocks allocated
#      under MPI_Init_thread, MPI_Finalize, the loading of Open MPI's components and its progress
#      thread).
# Environment: AG_LIBDIR (default .build/release: the directory holding libautograd.so, built by
# scripts/build.sh) and AG_INCLUDE (default include: the directory holding autograd.h).
# Needs Open MPI (mpicc, mpirun: apt-get install openmpi-bin libopenmpi-dev, which scripts/setup.sh
# does), python3 and valgrind. Runs as root too (mpirun --allow-run-as-root). About 30 s on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

libdir="${AG_LIBDIR:-.build/release}"
include="${AG_INCLUDE:-include}"
outdir=.build/ddp
for tool in mpicc mpirun; do
    if ! command -v "$tool" >/dev/null; then
        echo "ddp-tests: $tool not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev; scripts/setup.sh does)" >&2
        exit 1
    fi
done
for tool in python3 valgrind timeout; do
    if ! command -v "$tool" >/dev/null; then
        echo "ddp-tests: $tool not found (scripts/setup.sh installs it)" >&2
        exit 1
    fi
done
if [[ ! -f "$libdir/libautograd.so" ]]; then
    echo "ddp-tests: $libdir/libautograd.so not found; build it first (scripts/build.sh) or set AG_LIBDIR" >&2
    exit 1
fi
if [[ ! -f "$include/autograd.h" ]]; then
    echo "ddp-tests: $include/autograd.h not found; set AG_INCLUDE" >&2
    exit 1
fi
mkdir -p "$outdir"
libdir="$(cd "$libdir" && pwd)"
# The program links against the soname libautograd.so.0; scripts/build.sh puts that link beside
# the library, a bare directory gets one here.
linkdir="$libdir"
if [[ ! -e "$libdir/libautograd.so.0" ]]; then
    linkdir="$PWD/$outdir/lib"
    mkdir -p "$linkdir"
    ln -sf "$libdir/libautograd.so" "$linkdir/libautograd.so"
    ln -sf "$libdir/libautograd.so" "$linkdir/libautograd.so.0"
fi

echo "== build (mpicc $(mpirun --version | head -1 | sed 's/.*) //'))"
mpicc -std=c11 -Wall -Wextra -Werror -O2 -g -I "$include" -I bindings/mpi \
    examples/ddp_digits.c bindings/mpi/autograd_ddp.c -o "$outdir/ddp_digits" \
    -L"$linkdir" -lautograd -Wl,-rpath,"$linkdir" -lm
mpicc -std=c11 -Wall -Wextra -Werror -O2 -g -I "$include" -I bindings/mpi \
    bindings/mpi/test_ddp.c bindings/mpi/autograd_ddp.c -o "$outdir/test_ddp" \
    -L"$linkdir" -lautograd -Wl,-rpath,"$linkdir" -lm

mpi=(mpirun --allow-run-as-root --oversubscribe)
prog="$outdir/ddp_digits"
log="$outdir/logs"
rm -rf "$log"
mkdir -p "$log"
summary=()

# max_abs_diff A B: the largest |a - b| over two raw float64 files of equal length.
max_abs_diff() {
    python3 - "$1" "$2" <<'PY'
import array, sys
a, b = array.array("d"), array.array("d")
for arr, path in ((a, sys.argv[1]), (b, sys.argv[2])):
    with open(path, "rb") as f:
        arr.frombytes(f.read())
if len(a) != len(b) or len(a) == 0:
    sys.exit(f"ddp-tests: {sys.argv[1]} and {sys.argv[2]} hold {len(a)} and {len(b)} values")
print(f"{max(abs(x - y) for x, y in zip(a, b)):.3e}")
PY
}

# train NAME NP ARGS...: a full run (20 epochs, which must reach 96% test accuracy) writing
# $log/NAME.bin; both ranks must end with the same weights.
train() {
    local name=$1 np=$2
    shift 2
    echo "== $name: $np rank(s) $*"
    if ! "${mpi[@]}" -np "$np" "$prog" --weights "$log/$name.bin" "$@" >"$log/$name.log" 2>&1; then
        cat "$log/$name.log"
        echo "ddp-tests: FAILED: $name" >&2
        exit 1
    fi
    grep -E "^(final|timing|overlap)" "$log/$name.log"
    grep -q "identical on every rank" "$log/$name.log"
}

# within NAME A B TOL: the max abs difference of two weight files must be at most TOL.
within() {
    local d
    d=$(max_abs_diff "$log/$2.bin" "$log/$3.bin")
    if ! python3 -c "import sys; sys.exit(0 if float('$d') <= $4 else 1)"; then
        echo "ddp-tests: FAILED: $1: max |$2 - $3| = $d > $4" >&2
        exit 1
    fi
    echo "   $1: max |$2 - $3| = $d (<= $4)"
    summary+=("$1: max abs difference $d (<= $4)")
}

echo "== test_ddp: 2 ranks (broadcast, a gradient on one rank only, a second backward refused, gradient accumulation with sync off)"
"${mpi[@]}" -np 2 "$outdir/test_ddp"
summary+=("test_ddp (2 ranks): broadcast, one-rank gradient averaged, second backward refused, no handle left")

train np1 1
train np2 2
within "1 rank vs 2 ranks" np1 np2 1e-12
train np2_rank_order 2 --rank-order
within "1 rank vs 2 ranks in rank order" np1 np2_rank_order 1e-12
within "2 ranks: MPI_Iallreduce vs rank order" np2 np2_rank_order 0
train np2_no_overlap 2 --no-overlap
within "2 ranks: overlap vs no overlap" np2 np2_no_overlap 0

# fault MODE BOUND PATTERN [ENV...]: rank 1 fails at step 30; mpirun must end non-zero within
# BOUND seconds and the output must hold PATTERN (an extended regular expression).
fault() {
    local mode=$1 bound=$2 pattern=$3
    shift 3
    echo "== fault: rank 1 $mode at step 30 $*"
    local start end rc=0
    start=$(date +%s.%N)
    env "$@" timeout 90 "${mpi[@]}" -np 2 "$prog" --fail-rank 1 --fail-at 30 --fail-mode "$mode" \
        >"$log/fault_$mode.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    local elapsed
    elapsed=$(python3 -c "print(f'{$end - $start:.1f}')")
    grep -E "^ddp|injected" "$log/fault_$mode.log" || true
    if [[ $rc -eq 0 ]]; then
        echo "ddp-tests: FAILED: fault $mode: mpirun exited 0" >&2
        exit 1
    fi
    if [[ $rc -eq 124 ]] || ! python3 -c "import sys; sys.exit(0 if $elapsed < $bound else 1)"; then
        echo "ddp-tests: FAILED: fault $mode: took $elapsed s (bound $bound s; exit status $rc)" >&2
        exit 1
    fi
    if ! grep -Eq "$pattern" "$log/fault_$mode.log"; then
        cat "$log/fault_$mode.log"
        echo "ddp-tests: FAILED: fault $mode: no line matching '$pattern'" >&2
        exit 1
    fi
    echo "   fault $mode: exit status $rc after $elapsed s (bound $bound s)"
    summary+=("fault $mode: mpirun exit status $rc after $elapsed s (< $bound s), message found")
}

survivor='ddp: rank 0: (terminated by the MPI launcher|the all-reduce .* (failed|did not complete))'
fault exit 30 "$survivor"
fault crash 30 "$survivor"
fault hang 30 'ddp: rank 0: the all-reduce of bucket [0-9]+ at step 30 did not complete within 5 s' AG_DDP_TIMEOUT=5

echo "== valgrind: 1 rank, 1 epoch"
if ! valgrind --num-callers=60 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect --suppressions=bindings/mpi/openmpi.supp --error-exitcode=9 \
    "$prog" --epochs 1 >"$log/valgrind.log" 2>&1; then
    grep -A30 -E "lost in|Invalid|uninitialised" "$log/valgrind.log" | head -120
    echo "ddp-tests: FAILED: valgrind (see $log/valgrind.log)" >&2
    exit 1
fi
grep -E "definitely lost:|indirectly lost:|ERROR SUMMARY" "$log/valgrind.log" | sed 's/^==[0-9]*==/  /'
summary+=("valgrind (1 rank, 1 epoch): no memcheck error, no definite or indirect leak outside Open MPI")

echo
echo "ddp-tests: all passed"
for line in "${summary[@]}"; do echo "  $line"; done
for name in np1 np2 np2_rank_order np2_no_overlap; do
    printf '  %-15s %s\n' "$name" "$(grep '^timing' "$log/$name.log" | sed 's/.*: step/step/')"
done
