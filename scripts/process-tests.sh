#!/usr/bin/env bash
# Tests of the process around the library, run natively (valgrind would change what they test:
# it replaces the allocator and its own mappings count against the address-space limit):
#   1. bindings/c/test_memory_limit.c: the program limits its own address space (setrlimit),
#      runs out of memory with tensor buffers and with graph nodes, and must get
#      AG_ERR_OUT_OF_MEMORY, keep working, and recover once memory is freed (never abort);
#   2. bindings/c/test_dlclose.c: 20 cycles of dlopen, ops on three threads (worker pool
#      included), dlclose, and a thread that exits after the dlclose.
# Assumes the library is built (scripts/build.sh: its link flags, -z nodelete and the allocator
# wraps, are what these tests check). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

libdir="$PWD/.build/release"
outdir=.build/c
if [[ ! -f "$libdir/libautograd.so" ]]; then
    echo "process-tests: $libdir/libautograd.so not found; build it first (scripts/build.sh)" >&2
    exit 1
fi
mkdir -p "$outdir"

# Prints a command, runs it (with a time limit: a hang is a failure too), and stops the script
# with a clear message if it fails.
run() {
    echo "+ $*"
    local status=0
    timeout 300 "$@" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "process-tests: FAILED (exit $status): $*" >&2
        exit 1
    fi
}

echo "== compile"
run cc -std=c11 -O1 -Wall -Wextra -Werror -g -I include -o "$outdir/test_memory_limit" \
    bindings/c/test_memory_limit.c -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm -lpthread
# Not linked with the library: it dlopens it.
run cc -std=c11 -O1 -Wall -Wextra -Werror -g -I include -o "$outdir/test_dlclose" \
    bindings/c/test_dlclose.c -ldl -lpthread

echo
echo "== run test_memory_limit"
run "$outdir/test_memory_limit"
echo
echo "== run test_dlclose"
run "$outdir/test_dlclose" "$libdir/libautograd.so" 20

echo
echo "process-tests: OK"
