#!/usr/bin/env bash
# Sanitizer builds and runs (issue "Hardening"). Exits non-zero if any step fails; prints each
# step's time. About 2-3 minutes on a 2-core machine from a cold cache (less when warm).
#
#   1. AddressSanitizer + UndefinedBehaviorSanitizer: bindings/c/example.c and every
#      bindings/c/test_*.c (test_limits excepted: its 1,000,000-op chains and 10,000 training
#      steps are too slow under ASan and it has no smaller-size setting), compiled with clang
#      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all against the
#      release library (.build/release/libautograd.so), and run with leak detection on
#      (test_threads with THREAD_SECONDS=3).
#   2. The same for the libffi harness (bindings/ffi/harness.c), dlopening the release library.
#   3. XCTest built and run with `swift test --sanitize=address` (its own scratch path).
#   4. ThreadSanitizer: the library built with -sanitize=thread (release configuration, dynamic
#      Swift runtime: -static-stdlib does not combine with the sanitizer runtimes), and
#      test_threads plus the other C test programs built with -fsanitize=thread and run with
#      TSAN_OPTIONS=halt_on_error=1 (test_threads with THREAD_SECONDS=3). Left out: test_limits
#      (too slow), test_memory_limit and test_dlclose (native only: scripts/process-tests.sh),
#      and test_autograd, which starts threads with C11 thrd_create; this toolchain's
#      TSan runtime (clang 21 with glibc 2.36) does not intercept thrd_create and crashes in the
#      new thread (SEGV at 0x18 inside the runtime, even for an empty thread function).
#      test_fork runs with die_after_fork=0: its children start worker threads after a
#      multi-threaded fork, which TSan otherwise ends (it passes cleanly with the option).
#
# Sanitizer options and why:
#   ASAN_OPTIONS / TSAN_OPTIONS allocator_may_return_null=1: test_autograd and test_bad_input
#     ask for 2^50-element tensors and expect AG_ERR_OUT_OF_MEMORY; the sanitizer allocators
#     otherwise abort on requests above their 1 TiB limit instead of returning NULL like glibc.
#   ASAN_OPTIONS detect_leaks=1 for the C programs and the harness. No LeakSanitizer
#     suppressions are needed: the runs are leak-free (the Swift runtime's process-lifetime
#     caches stay reachable from globals, so LSan does not report them), so there is no
#     bindings/c/lsan.supp.
#   XCTest: on Linux the XCTest runner itself leaks its test-case objects, names and suite
#     runs at exit (XCTMain's locals, a weak-reference side table from awaitUsingExpectation),
#     so LeakSanitizer always fails `swift test`. Rather than suppress by frame (every engine
#     allocation in a test also has XCTest frames on its stack), the step accepts a leak report
#     only if no leaked block was allocated through Autograd's own code (a frame in Sources/ or
#     a symbol of the Autograd or AutogradC modules), and the tests themselves all passed.
#
# Usage: scripts/sanitizers.sh    (environment: SAN_THREAD_SECONDS, default 3; CLANG, default
# the Swift toolchain's clang). Logs go to .build/sanitizers/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."

swift_bin=$(dirname "$(command -v swift)")
swift_runtime="$(dirname "$swift_bin")/lib/swift/linux" # libdispatch, BlocksRuntime (for TSan)
clang=${CLANG:-$swift_bin/clang}
libdir=$PWD/.build/release
tsan_scratch=.build-tsan
tsan_libdir=$PWD/$tsan_scratch/release
outdir=.build/sanitizers
thread_seconds=${SAN_THREAD_SECONDS:-3}
total_start=$SECONDS
mkdir -p "$outdir"

# lld: the default gold linker prints hundreds of "Cannot export local symbol __asan_*" warnings.
asan_flags=(-std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined -fno-omit-frame-pointer
    -fno-sanitize-recover=all -fuse-ld=lld)
tsan_flags=(-std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=thread -fno-omit-frame-pointer -fuse-ld=lld)
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:allocator_may_return_null=1:second_deadlock_stack=1"

fail() {
    echo "sanitizers: FAILED: $*" >&2
    echo "sanitizers: failed after $((SECONDS - total_start)) s" >&2
    exit 1
}

# Runs a program with its output in a log; on failure prints the log's end and stops.
run_logged() {
    local name=$1 log=$2
    shift 2
    local start=$SECONDS status=0
    "$@" >"$log" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        grep -E 'ERROR|WARNING|SUMMARY|FAILED|runtime error' "$log" | head -n 40 || true
        echo "---- last lines of $log"
        tail -n 80 "$log"
        fail "$name exited with status $status (log: $log)"
    fi
    printf '  %-28s ok  %3d s  %s\n' "$name" $((SECONDS - start)) "$(tail -n 1 "$log")"
}

# The C test programs: every bindings/c/test_*.c, minus the given names.
c_programs() {
    local f name skip
    for f in bindings/c/test_*.c; do
        name=$(basename "$f" .c)
        for skip in "$@"; do [[ $name == "$skip" ]] && continue 2; done
        echo "$name"
    done
}

echo "== 0. release library (scripts/build.sh)"
start=$SECONDS
bash scripts/build.sh >"$outdir/build.log" 2>&1 || { tail -n 40 "$outdir/build.log"; fail "scripts/build.sh"; }
echo "== 0. done ($((SECONDS - start)) s)"

echo
echo "== 1. C programs with ASan + UBSan (test_limits skipped: too slow under ASan; the process tests"
echo "   test_memory_limit and test_dlclose run natively in scripts/process-tests.sh: an address-space"
echo "   limit and the sanitizers' shadow memory exclude each other)"
start=$SECONDS
mapfile -t asan_programs < <(echo example; c_programs test_limits test_memory_limit test_dlclose)
for prog in "${asan_programs[@]}"; do
    "$clang" "${asan_flags[@]}" -I include -o "$outdir/$prog.asan" "bindings/c/$prog.c" \
        -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm -lpthread || fail "compiling $prog with ASan+UBSan"
done
echo "  compiled ${#asan_programs[@]} programs ($((SECONDS - start)) s)"
for prog in "${asan_programs[@]}"; do
    # test_fork's children inherit the parent's memory but not its other threads: what those
    # threads had allocated and not yet freed at the fork is unreachable in the child, and
    # LeakSanitizer reports it at the child's exit. That is no leak of the library's, so leak
    # checking is off for that program; its own live-handle checks still run.
    leak_option=""
    [[ $prog == test_fork ]] && leak_option=":detect_leaks=0"
    ASAN_OPTIONS="$ASAN_OPTIONS$leak_option" THREAD_SECONDS=$thread_seconds \
        run_logged "$prog" "$outdir/$prog.asan.log" "$outdir/$prog.asan"
done
echo "== 1. done ($((SECONDS - start)) s)"

echo
echo "== 2. libffi harness with ASan + UBSan"
start=$SECONDS
pkg-config --exists libffi || fail "libffi is not installed (scripts/setup.sh installs libffi-dev)"
# shellcheck disable=SC2046 # pkg-config prints several words on purpose
"$clang" "${asan_flags[@]}" -o "$outdir/harness.asan" bindings/ffi/harness.c $(pkg-config --cflags --libs libffi) \
    -ldl -lm || fail "compiling the ffi harness with ASan+UBSan"
run_logged "ffi harness" "$outdir/harness.asan.log" \
    "$outdir/harness.asan" --require-coverage "$libdir/libautograd.so" include/autograd.h bindings/ffi/cases
echo "== 2. done ($((SECONDS - start)) s)"

echo
echo "== 3. XCTest with --sanitize=address (scratch path .build-asan-xctest)"
start=$SECONDS
log=$outdir/xctest.asan.log
status=0
swift test --sanitize=address --scratch-path .build-asan-xctest --disable-swift-testing >"$log" 2>&1 || status=$?
grep -E 'Executed [0-9]+ tests' "$log" | tail -n 1 || true
if grep -qE 'error: |with [1-9][0-9]* failures?' "$log"; then
    grep -E 'error: |failed \(' "$log" | head -n 30
    fail "XCTest under ASan: test failures or build errors (log: $log)"
fi
if grep -q 'ERROR: AddressSanitizer' "$log"; then
    grep -A 40 'ERROR: AddressSanitizer' "$log" | head -n 60
    fail "XCTest under ASan: AddressSanitizer error (log: $log)"
fi
if [[ $status -ne 0 ]]; then
    grep -q 'ERROR: LeakSanitizer' "$log" || { tail -n 40 "$log"; fail "swift test exited with $status (log: $log)"; }
    # Leak blocks (from "Direct/Indirect leak" to the next blank line) with an engine frame.
    engine_leaks=$(awk '/^(Direct|Indirect) leak of/ { block = $0; keep = 1; next }
        keep && /^$/ { if (engine) print block; keep = 0; engine = 0; next }
        keep { block = block "\n" $0; if ($0 ~ /Sources\/Autograd|\$s8Autograd|\$s9AutogradC/) engine = 1 }
        END { if (keep && engine) print block }' "$log")
    if [[ -n $engine_leaks ]]; then
        echo "$engine_leaks" | head -n 80
        fail "XCTest under ASan: memory leaked through Autograd code (log: $log)"
    fi
    blocks=$(grep -cE '^(Direct|Indirect) leak' "$log" || true)
    echo "  LeakSanitizer reported only the XCTest runner's own objects ($blocks blocks, none allocated by Autograd)"
fi
echo "== 3. done ($((SECONDS - start)) s)"

echo
echo "== 4. ThreadSanitizer: library with -sanitize=thread, C tests with -fsanitize=thread"
start=$SECONDS
swift build -c release --product autograd -Xswiftc -sanitize=thread --scratch-path "$tsan_scratch" \
    >"$outdir/tsan-build.log" 2>&1 || { tail -n 40 "$outdir/tsan-build.log"; fail "building the TSan library"; }
ln -sf libautograd.so "$tsan_libdir/libautograd.so.0"
echo "  built $tsan_libdir/libautograd.so ($((SECONDS - start)) s)"
mapfile -t tsan_programs < <(echo test_threads; c_programs test_limits test_autograd test_threads test_memory_limit test_dlclose)
for prog in "${tsan_programs[@]}"; do
    # libclang_rt.tsan carries libdispatch interceptors: link the toolchain's libdispatch.
    "$clang" "${tsan_flags[@]}" -I include -o "$outdir/$prog.tsan" "bindings/c/$prog.c" \
        -L "$tsan_libdir" -lautograd "-Wl,-rpath,$tsan_libdir" -L "$swift_runtime" -ldispatch -lBlocksRuntime \
        "-Wl,-rpath,$swift_runtime" -lm -lpthread || fail "compiling $prog with TSan"
done
for prog in "${tsan_programs[@]}"; do
    fork_option=""
    [[ $prog == test_fork ]] && fork_option=":die_after_fork=0"
    # A forked child runs its product and backward pass under TSan many times slower than
    # natively: 40 s before it counts as hung (see child_deadline_s in test_fork.c).
    TSAN_OPTIONS="$TSAN_OPTIONS$fork_option" THREAD_SECONDS=$thread_seconds FORK_CHILD_DEADLINE_S=40 \
        run_logged "$prog (TSan)" "$outdir/$prog.tsan.log" "$outdir/$prog.tsan"
done
echo "== 4. done ($((SECONDS - start)) s)"

echo
echo "sanitizers: OK ($((SECONDS - total_start)) s)"
