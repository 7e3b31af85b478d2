#!/usr/bin/env bash
# Random-graph reference test: compares libautograd.so's forward values and gradients with an
# independent reference, JAX's CPU build in float64, on 400 random graphs (200 float64, 200
# float32) mixing the whole op catalogue (Tests/reference/random_graphs.py describes the graphs,
# the error metric and the thresholds: 1e-10 for float64, 1e-4 for float32); every graph is also
# captured once (ag_capture) and replayed on new leaf values, bit-identical to the eager run on them.
# Then Tests/reference/interop.py: safetensors files against the PyPI safetensors package (NumPy and
# PyTorch), and DLPack with PyTorch.
# Installs jax, jaxlib and numpy from PyPI with pip when `import jax` fails, safetensors when
# `import safetensors` fails, and torch (CPU build,
# from download.pytorch.org) when `import torch` fails.
# Assumes the library is built (scripts/build.sh). AUTOGRAD_LIB overrides the library's path;
# arguments are passed to the Python script (--help lists them). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export AUTOGRAD_LIB="${AUTOGRAD_LIB:-$PWD/.build/release/libautograd.so}"
if [[ ! -f "$AUTOGRAD_LIB" ]]; then
    echo "reference-tests: $AUTOGRAD_LIB not found; build it first (scripts/build.sh)" >&2
    exit 1
fi

if ! python3 -c "import jax, optax" >/dev/null 2>&1; then
    echo "reference-tests: installing jax, jaxlib, optax and numpy from PyPI"
    python3 -m pip install -q jax jaxlib optax numpy
fi
if ! python3 -c "import safetensors" >/dev/null 2>&1; then
    echo "reference-tests: installing safetensors from PyPI"
    python3 -m pip install -q safetensors
fi
if ! python3 -c "import torch" >/dev/null 2>&1; then
    echo "reference-tests: installing torch (CPU) from download.pytorch.org"
    python3 -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi

python3 Tests/reference/random_graphs.py "$@"

echo
echo "== interop: safetensors files from the PyPI package (NumPy and PyTorch) and back, a checkpoint's"
echo "   Adam state against torch.optim.Adam, DLPack with PyTorch (shared memory both ways)"
AUTOGRAD_LIBRARY="$AUTOGRAD_LIB" python3 Tests/reference/interop.py

echo
echo "== optimizers against optax (5 steps, float64) and hand-computed steps"
python3 Tests/reference/optimizers.py

echo
echo "== the CNN digits training side by side in PyTorch (examples/cnn_digits.c: same split, initial weights,"
echo "   batch order and schedule; float32): test accuracies within 1 point"
python3 examples/cnn_digits_torch.py --threads 1  # PyTorch and the C run at 1 thread: steadier on a shared machine

echo
echo "== the digits training side by side in JAX (same data, init, batch order, schedule)"
python3 examples/digits_jax.py

echo
echo "== the character transformer side by side in PyTorch (examples/char_transformer.c shortened to 500"
echo "   steps: same words, split, initial weights, batches, schedule, clipping and AdamW; float32)"
python3 examples/char_transformer_torch.py --steps 500
