#!/usr/bin/env bash
# Line coverage of Sources/ by the whole test suite: the XCTest profile (written by
# `swift test --enable-code-coverage`, which scripts/test.sh runs first) merged with the
# profiles of the C test programs, the examples and the libffi harness run against an
# instrumented build of libautograd.so. Prints llvm-cov's per-file report and a summary line,
# and fails below MIN_LINE_COVERAGE percent (default 95) or if any @_cdecl function declared in
# the header was never called.
set -euo pipefail
cd "$(dirname "$0")/.."
min=${MIN_LINE_COVERAGE:-95}
bin=$(dirname "$(command -v swift)")
profdata="$bin/llvm-profdata"
llvmcov="$bin/llvm-cov"
scratch=.build-cov
libdir="$PWD/$scratch/debug"

xctest_prof=$(ls .build/debug/codecov/default.profdata 2>/dev/null || true)
xctest_bin=$(ls -d .build/debug/*PackageTests.xctest 2>/dev/null | head -n 1 || true)
if [[ -z "$xctest_prof" || -z "$xctest_bin" ]]; then
    echo "coverage: no XCTest profile; run 'swift test --enable-code-coverage' first" >&2
    exit 1
fi

echo "coverage: building an instrumented libautograd.so in $scratch"
swift build -c debug --product autograd -Xswiftc -profile-generate -Xswiftc -profile-coverage-mapping \
    --scratch-path "$scratch" 2>&1 | grep -E "error|warning: unre|Compiling|Build" | tail -n 3
ln -sf libautograd.so "$libdir/libautograd.so.0"

prof="$PWD/$scratch/prof"
rm -rf "$prof"
mkdir -p "$prof"
export LLVM_PROFILE_FILE="$prof/%p-%m.profraw"

echo "coverage: running the C programs and the libffi harness against it"
for src in bindings/c/test_*.c bindings/c/example.c examples/digits.c; do
    name=$(basename "$src" .c)
    # Long runs, and the process tests (they need the release build's link flags).
    [[ "$name" == test_limits || "$name" == test_threads || "$name" == test_memory_limit || "$name" == test_dlclose ]] && continue
    cc -std=c11 -O1 -w -I include -o "$scratch/$name" "$src" -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm -lpthread
    if [[ "$name" == digits ]]; then "$scratch/$name" examples/data/digits.csv >/dev/null; else "$scratch/$name" >/dev/null; fi
done
cc -std=c11 -O1 -w bindings/ffi/harness.c $(pkg-config --cflags --libs libffi) -ldl -lm -o "$scratch/harness"
"$scratch/harness" "$libdir/libautograd.so" include/autograd.h bindings/ffi/cases >/dev/null

"$profdata" merge -o "$scratch/all.profdata" "$xctest_prof" "$prof"/*.profraw
objects=(-object "$xctest_bin" -object "$libdir/libautograd.so")
ignore='(\.build[^/]*|Tests|checkouts)/'
"$llvmcov" report "${objects[@]}" -instr-profile "$scratch/all.profdata" -ignore-filename-regex="$ignore" \
    | sed 's#^.*/Sources/#Sources/#' > "$scratch/report.txt"
cat "$scratch/report.txt"

# Every C entry point reached: the @_cdecl functions' Swift bodies, by demangled name.
"$llvmcov" export "${objects[@]}" -instr-profile "$scratch/all.profdata" -ignore-filename-regex="$ignore" \
    > "$scratch/export.json"
python3 - "$scratch/export.json" include/autograd.h <<'PY'
import json, re, subprocess, sys
data = json.load(open(sys.argv[1]))
names = {}
for f in data["data"][0]["functions"]:
    names[f["name"]] = names.get(f["name"], 0) + f["count"]
demangled = subprocess.run(["swift", "demangle", "--simplified"], input="\n".join(names),
                           capture_output=True, text=True).stdout.splitlines()
called = {}
for (mangled, count), plain in zip(names.items(), demangled):
    m = re.match(r"(ag_[a-z0-9_]+)\(", plain)
    if m: called[m.group(1)] = called.get(m.group(1), 0) + count
# Declarations only: comments may name a function or a type followed by a parenthesis.
header = re.sub(r"/\*.*?\*/", "", open(sys.argv[2]).read(), flags=re.S)
declared = sorted(set(re.findall(r"\b(ag_[a-z0-9_]+)\s*\(", header)))
missing = [d for d in declared if called.get(d, 0) == 0]
print(f"coverage: {len(declared) - len(missing)} of {len(declared)} C functions reached by the tests")
if missing:
    print("coverage: never called:", " ".join(missing))
    sys.exit(1)
PY

total=$(awk '/^TOTAL/ {print $(NF-3)}' "$scratch/report.txt" | tr -d '%')
echo "coverage: line coverage of Sources/: ${total}% (minimum ${min}%)"
awk -v t="$total" -v m="$min" 'BEGIN { exit !(t + 0 >= m + 0) }'
