#!/usr/bin/env bash
# Builds and tests the Rust crate bindings/rust against the built libautograd.so:
#   1. bindings/rust/src/sys.rs is what bindings/rust/gen_sys.py generates from the header now,
#   2. cargo test: the crate's tests (tests/*.rs: sys.rs against the parsed header, the C
#      example's graph against its hand derivation, errors, operators, hooks, custom ops,
#      optimizers, no_grad, handle counts) and its doc examples, warnings as errors,
#   3. cargo run --example mlp: XOR learned (the example exits 1 otherwise); cargo doc, warnings
#      (broken links in the documentation) as errors,
#   4. every integration-test binary that calls the library again under valgrind (the policy of
#      scripts/c-tests.sh: definite and indirect leaks and every memcheck error fail).
#   AUTOGRAD_LIB_DIR=DIR bash scripts/rust-tests.sh   (DIR holds libautograd.so; default .build/release)
# The crate has no dependencies, so cargo runs --offline. Debug builds: on 2 cores they build
# in about half the time of release ones, and the tests are small. Output goes to
# .build/rust-target (CARGO_TARGET_DIR). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

libdir=${AUTOGRAD_LIB_DIR:-$root/.build/release}
[ -f "$libdir/libautograd.so" ] || { echo "rust-tests: $libdir/libautograd.so not found (bash scripts/build.sh)" >&2; exit 1; }
export AUTOGRAD_LIB_DIR=$(cd "$libdir" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/.build/rust-target}
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings"
export RUST_BACKTRACE=0 # the tests make panics on purpose; keep their reports short

command -v cargo >/dev/null || PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "rust-tests: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "rust-tests: valgrind is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
echo "rust-tests: $(cargo --version), library $AUTOGRAD_LIB_DIR"

echo "rust-tests: sys.rs against gen_sys.py"
python3 bindings/rust/gen_sys.py --check

cd bindings/rust
echo "rust-tests: cargo test"
cargo test --offline

echo "rust-tests: cargo run --example mlp"
cargo run --offline --example mlp

echo "rust-tests: cargo doc"
cargo doc --offline --no-deps --quiet

echo "rust-tests: the test binaries under valgrind"
# The executables of the integration tests, from cargo's JSON messages (built above: no rebuild).
mapfile -t binaries < <(cargo test --offline --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["executable"])')
[ "${#binaries[@]}" -ge 9 ] || { echo "rust-tests: found only ${#binaries[@]} test binaries" >&2; exit 1; }
for b in "${binaries[@]}"; do
    case $(basename "$b") in header-*) continue ;; esac # reads text only, never calls the library
    echo "rust-tests: valgrind $(basename "$b")"
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --error-exitcode=99 "$b" --test-threads=1 -q
done
echo "rust-tests: README.md's Rust program, pasted into a new crate"
demo=$CARGO_TARGET_DIR/readme-demo
rm -rf "$demo"
mkdir -p "$demo/src"
python3 - "$root/README.md" "$demo" "$root/bindings/rust" <<'PY'
import sys
readme, demo, crate = sys.argv[1:]
text = open(readme).read()
section = text[text.index("## Using it from Rust"):text.index("## Reusable graphs")]
toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
main = section.split("```rust\n", 1)[1].split("```", 1)[0]
open(f"{demo}/Cargo.toml", "w").write(toml.replace("/path/to/autograd/bindings/rust", crate))
open(f"{demo}/src/main.rs", "w").write(main)
PY
out=$(cd "$demo" && CARGO_TARGET_DIR="$demo/target" cargo run --offline --quiet)
echo "$out"
# By hand (bindings/c/example.c's derivation): f = 14.25, df/dx = dz W^T, df/dW = x^T dz.
expected='f = 14.25
df/dx = [1.0, 3.0, -1.0, -2.0, 0.5, 4.0]
df/dW = [2.0, 1.0, 4.0, -3.0, -2.0, 4.0]
AG_ERR_SHAPE: ag_matmul: inner extents differ: [2, 3] @ [2, 3]'
[ "$out" = "$expected" ] || { echo "rust-tests: README.md's Rust program printed something else" >&2; exit 1; }
echo "rust-tests: all passed"
