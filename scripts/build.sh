#!/usr/bin/env bash
# Builds the self-contained libautograd.so (Swift runtime linked statically) into .build/release,
# with the libautograd.so.0 soname link beside it.
# Linked with -z nodelete: dlclose leaves the library loaded, because threads outlive it (the
# worker pool's, and every caller thread's per-thread-state destructors run library code when the
# thread exits), so unmapping it would crash the host.
# Linked with --wrap for malloc, calloc, realloc and posix_memalign: the library's own calls and the statically
# linked Swift runtime's go through Sources/CKernels/memory_reserve.c, which gives the emergency
# memory reserve back and retries when an allocation fails (the runtime would abort the process).
set -euo pipefail
cd "$(dirname "$0")/.."
# The flags Package.swift cannot carry (a package with unsafe flags cannot be depended on by
# version): -O3 and no errno for the C kernels (lets the compiler vectorise sqrt and friends),
# DWARF 4 for valgrind 3.19, unchecked exclusivity (the run-time check is a call per class
# property access on the per-op path; see CONTRIBUTING.md for what it costs), and the soname.
flags=(-c release --product autograd -Xswiftc -static-stdlib
       -Xcc -O3 -Xcc -fno-math-errno -Xcc -gdwarf-4 -Xswiftc -enforce-exclusivity=unchecked
       -Xlinker -soname=libautograd.so.0
       -Xlinker "--version-script=$PWD/Sources/AutogradC/exports.map" -Xlinker -z -Xlinker nodelete
       -Xlinker --wrap=malloc -Xlinker --wrap=calloc -Xlinker --wrap=realloc -Xlinker --wrap=posix_memalign)
echo "build: swift build ${flags[*]}"
# The progress lines ("[12/80] Compiling ...") are dropped; a failed build fails this script even
# when an older library is still on disk.
mkdir -p .build
status=0
swift build "${flags[@]}" >.build/build.log 2>&1 || status=$?
grep -v '^\[' .build/build.log || true
if [ "$status" -ne 0 ]; then
    echo "build: swift build failed (exit $status)" >&2
    exit "$status"
fi
so=.build/release/libautograd.so
[ -f "$so" ] || { echo "build: $so was not produced" >&2; exit 1; }
ln -sf libautograd.so .build/release/libautograd.so.0
echo "build: $so ($(du -h "$so" | cut -f1))"
