#!/usr/bin/env bash
# README command 1: install what is missing, build libautograd.so, then compile and run the first
# example: a C program that trains an MLP on the UCI handwritten digits (examples/digits.c).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p .build/examples
cc -std=c11 -O2 -Wall -Wextra -I include examples/digits.c -o .build/examples/digits \
   -L .build/release -lautograd -Wl,-rpath,"$PWD/.build/release" -lm
echo "example: running .build/examples/digits examples/data/digits.csv"
.build/examples/digits examples/data/digits.csv
