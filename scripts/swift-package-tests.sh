#!/usr/bin/env bash
# The Swift package as another package sees it (examples/swift-package, which depends on
# Autograd by version):
#   1. copies the project's files as git tracks them (committed or not, plus new files git does
#      not ignore) into a new git repository, .build/swift-package/autograd, tagged 0.1.0;
#   2. builds the client package against it in Swift 6 mode (a scratch folder of its own) and
#      fails on any warning, the dependency's included;
#   3. runs XorMLP: the C example's graph against hand-derived gradients, errors as throws,
#      tensors in tasks, grad mode across await, and an MLP learning XOR;
#   4. checks that README.md's Swift program is ReadmeExample's main.swift, character for
#      character, runs it and compares its first two lines with the values derived by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=.build/swift-package
fail() { echo "swift-package-tests: FAILED: $*" >&2; exit 1; }

rm -rf "$work/autograd"
mkdir -p "$work/autograd"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] || continue  # deleted in the working tree
    mkdir -p "$work/autograd/$(dirname "$f")"
    cp -p "$f" "$work/autograd/$f"
done
(
    cd "$work/autograd"
    git init -q
    git add -A
    git -c user.name=test -c user.email=test@localhost commit -q -m "Autograd, as a client sees it"
    git tag 0.1.0
)
echo "swift-package-tests: $work/autograd tagged 0.1.0 ($(git -C "$work/autograd" ls-files | wc -l) files)"

# A new scratch folder each run: the dependency is resolved, fetched and built as a user's would be.
rm -rf "$work/build" examples/swift-package/Package.resolved
log=$work/build.log
status=0
swift build --disable-dependency-cache --package-path examples/swift-package --scratch-path "$root/$work/build" >"$log" 2>&1 || status=$?
grep -v '^\[' "$log" | grep -v '^Compiling\|^Building\|^Write' || true
[ "$status" -eq 0 ] || fail "swift build of examples/swift-package exited with $status (log: $log)"
if grep -q "warning:" "$log"; then
    grep "warning:" "$log" | sort -u
    fail "the client build printed warnings (log: $log)"
fi
grep -q "Computed .*/autograd at 0.1.0" "$log" || fail "the dependency was not resolved by version (log: $log)"
echo "swift-package-tests: examples/swift-package built against Autograd 0.1.0 with no warnings"
"$work/build/debug/XorMLP" || fail "the client program's checks"

readme=.build/swift-package/readme-program.swift
python3 - "$readme" <<'PY'
import sys
text = open("README.md").read()
section = text[text.index("## Using it from Swift"):]
start = section.index("```swift\nimport Autograd")
program = section[start + len("```swift\n"):]
open(sys.argv[1], "w").write(program[:program.index("```")])
PY
cmp -s "$readme" examples/swift-package/Sources/ReadmeExample/main.swift ||
    { diff "$readme" examples/swift-package/Sources/ReadmeExample/main.swift; fail "README.md's Swift program differs from examples/swift-package/Sources/ReadmeExample/main.swift"; }
out=$("$work/build/debug/ReadmeExample") || fail "README.md's Swift program exited with $?"
echo "$out"
# By hand (bindings/c/example.c's derivation): f = 14.25, df/dx = dz W^T, df/dW = x^T dz.
[ "$(sed -n 1p <<<"$out")" = "14.25 [1.0, 3.0, -1.0, -2.0, 0.5, 4.0] [2.0, 1.0, 4.0, -3.0, -2.0, 4.0]" ] ||
    fail "README.md's Swift program: f and its gradients"
[ "$(sed -n 2p <<<"$out")" = "matmul: inner extents differ: [2, 3] @ [2, 3]" ] ||
    fail "README.md's Swift program: the error thrown by withError"
echo "swift-package-tests: OK: README.md's Swift program is examples/swift-package's ReadmeExample and printed the hand-derived values"
