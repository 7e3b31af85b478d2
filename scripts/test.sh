#!/usr/bin/env bash
# README command 2: every test. Installs what is missing, then runs each part:
#   XCTest (engine, every op's gradcheck, the C ABI from Swift), the release build, the C example
#   and C test programs under valgrind, the C++ header's test and example, a client package that
#   depends on the Swift package by version, the Rust crate's tests and example (cargo test,
#   valgrind), the header/export check, the libffi harness, the
#   comparisons against JAX and optax, the install test, the Python package's tests, data-parallel
#   training over Open MPI from C and from Python (2 ranks against 1), and line coverage (printed
#   at the end).
# Every part runs even if an earlier one failed (the build excepted); the last line counts them.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
passed=0
failed=0
failures=()

# Each part's output goes to the terminal and to .build/parts/N.log; the end of a failed part's
# log is printed again at the very end, where a truncated CI log still shows it.
mkdir -p .build/parts
part() {
    local name=$1
    shift
    local log=.build/parts/$((passed + failed + 1)).log
    printf '\n==== %s (at %ds)\n' "$name" $((SECONDS - start))
    if "$@" 2>&1 | tee "$log"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
        failed_logs+=("$log")
        printf '==== FAILED: %s\n' "$name"
    fi
}
failed_logs=()

xctest() {
    mkdir -p .build
    local rc=0
    swift test --enable-code-coverage --disable-swift-testing > .build/xctest.log 2>&1 || rc=$?
    grep -E "error:|: error|failed \(|Executed [0-9]+ tests" .build/xctest.log | tail -n 40
    if [ "$rc" -ne 0 ]; then
        tail -n 30 .build/xctest.log
        echo "xctest: swift test exited with $rc (full log: .build/xctest.log)"
        return 1
    fi
}

bash scripts/setup.sh || { echo "test: setup failed"; exit 1; }
part "XCTest (swift test)" xctest
part "release build of libautograd.so" bash scripts/build.sh
if [ -f .build/release/libautograd.so ]; then
    part "C example and C tests under valgrind" bash scripts/c-tests.sh
    part "C++ header (include/autograd.hpp): test and example with g++ and clang++, valgrind, ASan+UBSan" bash scripts/cpp-tests.sh
    part "Swift package by version (examples/swift-package, Swift 6, no warnings): the example graph, errors, tasks, XOR" bash scripts/swift-package-tests.sh
    part "Rust crate (bindings/rust): cargo test and the MLP example" bash scripts/rust-tests.sh
    part "process: memory limit and dlclose with threads (natively)" bash scripts/process-tests.sh
    part "header, exported symbols and the C catalogue (shims, Python prototypes)" bash scripts/check-exports.sh
    part "libffi harness (bindings/ffi), natively and under valgrind" bash scripts/ffi-tests.sh
    part "sanitizers: ASan+UBSan C suites and harness, XCTest with ASan, TSan threads" bash scripts/sanitizers.sh
    # A fixed seed keeps the CI fuzz run repeatable; longer, unseeded runs are documented in
    # bindings/fuzz/README.md.
    part "libFuzzer on the C API (60 s) and on the safetensors loader (30 s): regressions, seed corpora, then fuzzing" env FUZZ_ARGS="${FUZZ_ARGS:--seed=1}" bash scripts/fuzz.sh
    part "make install into a temporary prefix, the C example built with pkg-config in env -i" bash scripts/install-test.sh
    part "Python package (bindings/python): pip install, pytest against JAX, examples/mlp.py" bash scripts/python-tests.sh
    part "references from PyPI: random graphs vs JAX, optimizers vs optax, digits in JAX" bash scripts/reference-tests.sh
    part "data parallel over Open MPI (bindings/mpi, examples/ddp_digits.c): 1 vs 2 ranks, rank order, faults, valgrind" bash scripts/ddp-tests.sh
    part "data parallel from Python over mpi4py (examples/ddp_digits.py): 1 vs 2 ranks, the deadline" bash scripts/ddp-python-tests.sh
fi
part "line coverage of Sources/ (llvm-cov, XCTest + C suites)" bash scripts/coverage.sh

printf '\n==== done in %ds\n' $((SECONDS - start))
for i in "${!failures[@]}"; do
    printf '\n==== the end of the failed part "%s" (%s):\n' "${failures[$i]}" "${failed_logs[$i]}"
    tail -n 40 "${failed_logs[$i]}"
done
for f in "${failures[@]}"; do echo "failed part: $f"; done
echo "test parts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
