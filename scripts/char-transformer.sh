#!/usr/bin/env bash
# The full-length run of examples/char_transformer.c: installs what is missing (Debian's wamerican
# word list included), builds libautograd.so, compiles the example and trains it (4000 steps of
# batch 32 by default), writing the loss curve to .build/examples/char_transformer.svg.
# Arguments are passed to the program (e.g. --steps 1000, --threads 1, --replay, --svg PATH).
# With --torch as the first argument it runs examples/char_transformer_torch.py instead, which
# runs the C program itself and then the same training in PyTorch (arguments passed to it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p .build/examples
cc -std=c11 -O2 -Wall -Wextra -I include examples/char_transformer.c -o .build/examples/char_transformer \
   -L .build/release -lautograd -Wl,-rpath,"$PWD/.build/release" -lm
if [[ "${1:-}" == "--torch" ]]; then
    shift
    exec python3 examples/char_transformer_torch.py --c-binary .build/examples/char_transformer "$@"
fi
echo "char-transformer: running .build/examples/char_transformer --svg .build/examples/char_transformer.svg $*"
exec .build/examples/char_transformer --svg .build/examples/char_transformer.svg "$@"
