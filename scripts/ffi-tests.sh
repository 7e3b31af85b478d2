#!/usr/bin/env bash
# The libffi-driven harness (bindings/ffi): builds libautograd.so's graphs from outside Swift,
# the way a foreign runtime does, and checks their gradients against finite differences.
#   1. compiles bindings/ffi/harness.c WITHOUT the header and WITHOUT linking the library (it
#      dlopens the library and reads include/autograd.h at run time),
#   2. runs every case in bindings/ffi/cases against the built library, natively,
#   3. runs them again under valgrind's memcheck.
# Usage: scripts/ffi-tests.sh [LIBRARY]   (default: .build/release/libautograd.so, built by
# scripts/build.sh). Exits non-zero if any case fails or valgrind reports an error or a
# definite/indirect leak.
#
# Valgrind policy, as scripts/c-tests.sh: memory errors and definite or indirect leaks fail the
# run; "possibly lost" and "still reachable" blocks are tolerated (the Swift runtime linked into
# libautograd.so keeps process-lifetime caches, and the dlopened library is never unloaded).
# bindings/ffi/valgrind.supp silences one false positive inside glibc's loader during dlopen.
set -euo pipefail
cd "$(dirname "$0")/.."

lib=${1:-$PWD/.build/release/libautograd.so}
header=include/autograd.h
cases=bindings/ffi/cases
outdir=.build/ffi
harness=$outdir/harness

if [[ ! -f "$lib" ]]; then
    echo "ffi-tests: $lib not found; build it first (scripts/build.sh)" >&2
    exit 1
fi
if ! pkg-config --exists libffi; then
    echo "ffi-tests: libffi is not installed (scripts/setup.sh installs libffi-dev)" >&2
    exit 1
fi
if ! command -v valgrind >/dev/null; then
    echo "ffi-tests: valgrind is not installed (scripts/setup.sh installs it)" >&2
    exit 1
fi
mkdir -p "$outdir"

echo "== compile (no -I include, no -lautograd)"
# shellcheck disable=SC2046 # pkg-config prints several words on purpose
cmd=(cc -std=c11 -Wall -Wextra -Werror -O1 -g -o "$harness" bindings/ffi/harness.c
    $(pkg-config --cflags --libs libffi) -ldl -lm)
echo "+ ${cmd[*]}"
"${cmd[@]}"

echo
echo "== run the cases"
start=$SECONDS
status=0
"$harness" --require-coverage "$lib" "$header" "$cases" || status=$?
if [[ $status -ne 0 ]]; then
    echo "ffi-tests: FAILED: the harness exited with status $status" >&2
    exit 1
fi
echo "native run: OK ($((SECONDS - start)) s)"

echo
log=$outdir/harness.valgrind.log
echo "== the cases again under valgrind (log in $log)"
start=$SECONDS
status=0
valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    --suppressions=bindings/ffi/valgrind.supp --error-exitcode=99 \
    "$harness" --require-coverage "$lib" "$header" "$cases" >"$log" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
    grep -v '^ok ' "$log" | tail -n 150
    if [[ $status -eq 99 ]]; then
        echo "ffi-tests: FAILED: valgrind found memory errors or definite/indirect leaks" >&2
    else
        echo "ffi-tests: FAILED: the harness under valgrind exited with status $status" >&2
    fi
    exit 1
fi
grep -E 'passed, [0-9]+ failed$' "$log" | tail -n 1
grep -E 'ERROR SUMMARY|definitely lost|indirectly lost' "$log" | head -n 3 || true
echo "valgrind run: OK ($((SECONDS - start)) s)"

echo
echo "ffi-tests: OK"
