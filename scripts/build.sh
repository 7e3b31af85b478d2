#!/usr/bin/env bash
# Builds the self-contained libautograd.so (Swift runtime linked statically) into .build/release,
# with the libautograd.so.0 soname link beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release --product autograd -Xswiftc -static-stdlib
       -Xlinker "--version-script=$PWD/Sources/AutogradC/exports.map")
echo "build: swift build ${flags[*]}"
swift build "${flags[@]}" 2>&1 | grep -v '^\[' || true
so=.build/release/libautograd.so
[ -f "$so" ] || { echo "build: $so was not produced" >&2; exit 1; }
ln -sf libautograd.so .build/release/libautograd.so.0
echo "build: $so ($(du -h "$so" | cut -f1))"
