#!/usr/bin/env bash
# Builds and runs the C++ header's test (bindings/cpp/test_autograd_hpp.cpp) and example
# (examples/mlp.cpp): with g++ -std=c++17 -pedantic and clang++ -std=c++20, all warnings as
# errors; then the test under valgrind and built with clang's address and undefined-behaviour
# sanitizers.
#   LIBDIR=DIR bash scripts/cpp-tests.sh     (DIR holds libautograd.so; default .build/release)
# Environment: CLANGXX (default /opt/swift/usr/bin/clang++ if present, else clang++).
set -euo pipefail
cd "$(dirname "$0")/.."

libdir=$(cd "${LIBDIR:-.build/release}" && pwd)
[ -f "$libdir/libautograd.so" ] || { echo "cpp-tests: $libdir/libautograd.so not found" >&2; exit 1; }
clangxx=${CLANGXX:-$( [ -x /opt/swift/usr/bin/clang++ ] && echo /opt/swift/usr/bin/clang++ || echo clang++ )}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
link=(-Iinclude -L"$libdir" -lautograd -Wl,-rpath,"$libdir")

build() { # build NAME COMPILER FLAGS... -- SOURCE
    local name=$1 cxx=$2; shift 2
    echo "cpp-tests: $cxx $* -> $name"
    "$cxx" "$@" "${link[@]}" -o "$out/$name"
}

for src in bindings/cpp/test_autograd_hpp.cpp examples/mlp.cpp; do
    base=$(basename "$src" .cpp)
    build "$base-gcc" g++ -std=c++17 -Wall -Wextra -Werror -pedantic "$src"
    build "$base-clang" "$clangxx" -std=c++20 -Wall -Wextra -Werror "$src"
    "$out/$base-gcc"
    "$out/$base-clang"
done

if command -v valgrind >/dev/null; then
    echo "cpp-tests: valgrind test_autograd_hpp"
    # As scripts/c-tests.sh: definite and indirect leaks and every memcheck error fail; "possibly
    # lost" blocks (the Swift runtime's process-lifetime metadata caches) are tolerated.
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --error-exitcode=99 "$out/test_autograd_hpp-gcc"
else
    echo "cpp-tests: valgrind is not installed (scripts/setup.sh installs it)" >&2
    exit 1
fi

build test_autograd_hpp-asan "$clangxx" -std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=all -fuse-ld=lld -Wall -Wextra -Werror bindings/cpp/test_autograd_hpp.cpp
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/test_autograd_hpp-asan"
echo "cpp-tests: all passed"
