#!/usr/bin/env bash
# Builds and runs the C programs in bindings/c against the built libautograd.so:
#   1. compiles bindings/c/example.c and bindings/c/test_autograd.c into .build/c/,
#   2. runs the example, then the test program,
#   3. runs both again under valgrind: definite or indirect leaks and invalid reads/writes
#      (any memcheck error) fail the run.
# Assumes the library is built (scripts/build.sh). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

libdir="$PWD/.build/release"
outdir=.build/c
if [[ ! -f "$libdir/libautograd.so" ]]; then
    echo "c-tests: $libdir/libautograd.so not found; build it first (scripts/build.sh)" >&2
    exit 1
fi
mkdir -p "$outdir"

run() {
    echo "+ $*"
    "$@"
}

for prog in example test_autograd; do
    run cc -std=c11 -Wall -Wextra -Werror -g -I include -o "$outdir/$prog" "bindings/c/$prog.c" \
        -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm
done

echo
echo "== example"
run "$outdir/example"
echo
echo "== test_autograd"
run "$outdir/test_autograd"

# Memcheck. The Swift runtime (linked statically into libautograd.so) keeps process-lifetime
# caches (metadata, conformances), which show up as "still reachable" or "possibly lost"; only
# definite and indirect leaks count as errors. Every other memcheck error (invalid read/write,
# use of uninitialised values, bad free) fails the run through --error-exitcode.
if ! command -v valgrind >/dev/null; then
    echo "c-tests: valgrind not installed" >&2
    exit 1
fi
for prog in example test_autograd; do
    echo
    echo "== valgrind $prog"
    start=$(date +%s)
    run valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --error-exitcode=99 "$outdir/$prog" >"$outdir/$prog.valgrind.out" 2>&1 ||
        {
            status=$?
            cat "$outdir/$prog.valgrind.out"
            echo "c-tests: valgrind $prog failed (exit $status)" >&2
            exit 1
        }
    tail -n 1 "$outdir/$prog.valgrind.out"
    echo "(valgrind $prog: $(($(date +%s) - start)) s; full output in $outdir/$prog.valgrind.out)"
done

echo
echo "c-tests: OK"
