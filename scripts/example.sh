#!/usr/bin/env bash
# README command 1: install what is missing, build libautograd.so, compile and run the first example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p .build/examples
cc -std=c11 -O2 -Wall -Wextra -I include examples/example.c -o .build/examples/example \
   -L .build/release -lautograd -Wl,-rpath,"$PWD/.build/release" -lm
echo "example: running .build/examples/example"
.build/examples/example
