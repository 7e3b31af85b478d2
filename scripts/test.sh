#!/usr/bin/env bash
# README command 2: every test. XCTest (engine and C ABI from Swift), then the release library's
# C tests under valgrind and the header/export check. Stops at the first failing part.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n==== %s (%ds)\n' "$*" $((SECONDS - start)); }

step "setup"
bash scripts/setup.sh

step "XCTest: swift test"
mkdir -p .build
rc=0
swift test > .build/xctest.log 2>&1 || rc=$?
grep -E "error:|: error|failed \(|Test Suite 'All tests'|Executed [0-9]+ tests" .build/xctest.log | tail -n 40
if [ "$rc" -ne 0 ]; then
    echo "test: swift test failed with status $rc (full log: .build/xctest.log)" >&2
    tail -n 30 .build/xctest.log >&2
    exit 1
fi

step "release build of libautograd.so"
bash scripts/build.sh

step "C example and C tests under valgrind"
bash scripts/c-tests.sh

step "header and exported symbols"
bash scripts/check-exports.sh

step "all tests passed"
