#!/usr/bin/env python3
"""The digits training of examples/digits.c, repeated in JAX: the side-by-side check.

Same data (examples/data/digits.csv, pixels / 16), same train/test split, same initial weights,
same batch order, same model (64 -> 128 -> 10, ReLU), same loss (mean softmax cross-entropy),
same optimizer (Adam with torch.optim's formulas, as include/autograd.h documents them) and the
same learning-rate schedule, all in float64. To get the same split, weights and batch order
without calling the library, this script reimplements the library's seeded generators:

  - SplitMix64: state += 0x9E3779B97F4A7C15; z = state; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB; out = z ^ (z >> 31)   (all mod 2^64);
  - the uniform values of ag_tensor_init: u = (out >> 11) * 2^-53, value = low + (high - low) * u,
    in row-major order; Kaiming uniform takes low = -b, high = b with
    b = sqrt(2) * sqrt(3 / fan_in), fan_in = shape[1] for an (out, in) weight;
  - the shuffles of digits.c: Fisher-Yates, for i = n-1 .. 1: j = out mod (i + 1), swap a[i], a[j].

If the library can be loaded (AUTOGRAD_LIB, default .build/release/libautograd.so) the initial
weights are also checked bit for bit against ag_tensor_init through ctypes.

It then compares its final test accuracy with the C program's, which it takes from
--c-accuracy PERCENT, or gets by running the C binary given with --c-binary (default: compile
examples/digits.c against the library into .build/examples/digits and run that). It exits
non-zero if the two differ by more than 1 point (or if its own accuracy is below 96%).

Usage: python3 examples/digits_jax.py [--csv PATH] [--c-accuracy PERCENT | --c-binary PATH]
"""

import argparse
import ctypes
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The experiment's constants: the same as in examples/digits.c.
N_SAMPLES, N_PIXELS, N_CLASSES, N_TEST = 1797, 64, 10, 360
HIDDEN, BATCH, EPOCHS = 128, 32, 20
LEARNING_RATE = 0.01
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
SPLIT_SEED, ORDER_SEED, W1_SEED, W2_SEED = 2024, 7, 1, 2
TARGET_ACCURACY = 0.96

MASK64 = (1 << 64) - 1


class SplitMix64:
    """The library's (and digits.c's) generator, in Python integers mod 2^64."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def unit(self):
        """Uniform in [0, 1) with 53 random bits (exact in a Python float)."""
        return (self.next() >> 11) * 2.0**-53


def shuffle(a, rng):
    """digits.c's Fisher-Yates shuffle, in place."""
    for i in range(len(a) - 1, 0, -1):
        j = rng.next() % (i + 1)
        a[i], a[j] = a[j], a[i]


def kaiming_uniform(shape, seed):
    """ag_tensor_init(shape, AG_INIT_KAIMING_UNIFORM, seed, AG_FLOAT64) for a 2-D (out, in) shape."""
    b = math.sqrt(2.0) * math.sqrt(3.0 / shape[1])
    low, high = -b, b
    rng = SplitMix64(seed)
    values = [low + (high - low) * rng.unit() for _ in range(shape[0] * shape[1])]
    return np.array(values, dtype=np.float64).reshape(shape)


def library_init(shape, seed):
    """The same weights made by the library itself (None if it cannot be loaded)."""
    path = os.environ.get("AUTOGRAD_LIB") or os.path.join(REPO, ".build", "release", "libautograd.so")
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    t = ctypes.c_uint64()
    dims = (ctypes.c_int64 * 2)(*shape)
    lib.ag_tensor_init.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_int64), ctypes.c_int64,
                                   ctypes.c_int32, ctypes.c_uint64, ctypes.c_int32]
    lib.ag_tensor_copy_data.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_uint64]
    lib.ag_tensor_free.argtypes = [ctypes.c_uint64]
    assert lib.ag_tensor_init(ctypes.byref(t), dims, 2, 1, seed, 2) == 0  # KAIMING_UNIFORM, FLOAT64
    out = np.empty(shape, dtype=np.float64)
    assert lib.ag_tensor_copy_data(out.ctypes.data, out.size, 2, t.value) == 0
    assert lib.ag_tensor_free(t.value) == 0
    return out


def load_csv(path):
    rows = np.loadtxt(path, delimiter=",", comments="#", dtype=np.int64)
    assert rows.shape == (N_SAMPLES, N_PIXELS + 1), rows.shape
    return rows[:, :N_PIXELS].astype(np.float64) / 16.0, rows[:, N_PIXELS]


def forward(params, x):
    w1, b1, w2, b2 = params
    hidden = jax.nn.relu(x @ w1.T + b1)
    return hidden @ w2.T + b2


def loss_fn(params, x, y):
    logp = jax.nn.log_softmax(forward(params, x), axis=1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


@jax.jit
def train_step(params, m, v, t, lr, x, y):
    """One Adam step with torch.optim.Adam's formulas (weight decay 0)."""
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    c1, c2 = 1 - BETA1**t, 1 - BETA2**t
    m = [BETA1 * mi + (1 - BETA1) * g for mi, g in zip(m, grads)]
    v = [BETA2 * vi + (1 - BETA2) * g * g for vi, g in zip(v, grads)]
    params = [p - lr * (mi / c1) / (jnp.sqrt(vi / c2) + EPS) for p, mi, vi in zip(params, m, v)]
    return params, m, v, loss


@jax.jit
def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(forward(params, x), axis=1) == y)


def c_accuracy(args):
    """The C program's final test accuracy in percent, from --c-accuracy or by running it, and
    its per-epoch mean training losses (None with --c-accuracy)."""
    if args.c_accuracy is not None:
        return args.c_accuracy, None
    binary = args.c_binary
    if binary is None:
        libdir = os.path.dirname(os.environ.get("AUTOGRAD_LIB") or os.path.join(REPO, ".build", "release", "libautograd.so"))
        binary = os.path.join(REPO, ".build", "examples", "digits")
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        cmd = ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-I", os.path.join(REPO, "include"),
               os.path.join(REPO, "examples", "digits.c"), "-o", binary, "-L", libdir, "-lautograd",
               "-Wl,-rpath," + os.path.abspath(libdir), "-lm"]
        print("+ " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    print(f"+ {binary} {args.csv}")
    run = subprocess.run([binary, args.csv], capture_output=True, text=True)
    sys.stdout.write("".join("  | " + line + "\n" for line in run.stdout.splitlines()))
    found = re.search(r"final test accuracy: ([0-9.]+)%", run.stdout)
    if found is None:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"digits_jax: the C program (exit {run.returncode}) printed no final accuracy")
    losses = [float(x) for x in re.findall(r"^epoch +\d+ .* loss ([0-9.]+) ", run.stdout, re.M)]
    return float(found.group(1)), losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", default=os.path.join(REPO, "examples", "data", "digits.csv"))
    parser.add_argument("--c-accuracy", type=float, help="the C program's final test accuracy, in percent")
    parser.add_argument("--c-binary", help="a compiled examples/digits.c to run for its accuracy")
    args = parser.parse_args()
    start = time.perf_counter()

    # The data and the split: as digits.c.
    pixels, labels = load_csv(args.csv)
    perm = list(range(N_SAMPLES))
    shuffle(perm, SplitMix64(SPLIT_SEED))
    test_idx, train_idx = np.array(perm[:N_TEST]), np.array(perm[N_TEST:])
    x_train, y_train = jnp.asarray(pixels[train_idx]), jnp.asarray(labels[train_idx])
    x_test, y_test = jnp.asarray(pixels[test_idx]), jnp.asarray(labels[test_idx])
    n_train = len(train_idx)

    # The initial parameters: Kaiming-uniform weights with digits.c's seeds, zero biases.
    w1 = kaiming_uniform((HIDDEN, N_PIXELS), W1_SEED)
    w2 = kaiming_uniform((N_CLASSES, HIDDEN), W2_SEED)
    checked = 0
    for name, ours, shape, seed in (("w1", w1, (HIDDEN, N_PIXELS), W1_SEED), ("w2", w2, (N_CLASSES, HIDDEN), W2_SEED)):
        theirs = library_init(shape, seed)
        if theirs is None:
            print(f"digits_jax: library not found; initial {name} not cross-checked against ag_tensor_init")
        elif not np.array_equal(ours, theirs):
            raise SystemExit(f"digits_jax: initial {name} differs from ag_tensor_init (max {np.abs(ours - theirs).max()})")
        else:
            checked += 1
    if checked == 2:
        print("digits_jax: initial weights identical to ag_tensor_init's, bit for bit")
    params = [jnp.asarray(w1), jnp.zeros(HIDDEN), jnp.asarray(w2), jnp.zeros(N_CLASSES)]
    m = [jnp.zeros_like(p) for p in params]
    v = [jnp.zeros_like(p) for p in params]

    print(f"digits_jax: {n_train} training and {N_TEST} test samples; MLP 64-{HIDDEN}-10 (ReLU), Adam, "
          f"lr {LEARNING_RATE:g} (cosine), batch {BATCH}, {EPOCHS} epochs, float64")
    order = list(range(n_train))
    order_rng = SplitMix64(ORDER_SEED)
    t = 0
    test_acc = 0.0
    epoch_losses = []
    for epoch in range(1, EPOCHS + 1):
        lr = LEARNING_RATE * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / EPOCHS))
        shuffle(order, order_rng)
        loss_sum = 0.0
        for first in range(0, n_train, BATCH):
            idx = np.array(order[first:first + BATCH])
            t += 1
            params, m, v, loss = train_step(params, m, v, float(t), lr, x_train[idx], y_train[idx])
            loss_sum += float(loss) * len(idx)
        epoch_losses.append(loss_sum / n_train)
        train_acc = float(accuracy(params, x_train, y_train))
        test_acc = float(accuracy(params, x_test, y_test))
        print(f"epoch {epoch:2d}  lr {lr:.5f}  loss {loss_sum / n_train:.4f}  train acc {100 * train_acc:6.2f}%  "
              f"test acc {100 * test_acc:6.2f}%  {time.perf_counter() - start:5.2f} s", flush=True)
    jax_percent = 100 * test_acc
    print(f"final test accuracy (JAX): {jax_percent:.2f}% ({round(test_acc * N_TEST)} of {N_TEST} test digits)")

    c_percent, c_losses = c_accuracy(args)
    if c_losses is not None and len(c_losses) == EPOCHS:
        worst = max(abs(a - b) for a, b in zip(c_losses, epoch_losses))
        print(f"per-epoch mean training loss, C vs JAX: largest difference {worst:.1e} (C prints 4 decimals)")
    gap = abs(jax_percent - c_percent)
    print(f"C (libautograd) {c_percent:.2f}%  vs  JAX {jax_percent:.2f}%: difference {gap:.2f} points")
    ok = gap <= 1.0 and test_acc >= TARGET_ACCURACY
    print("digits_jax: OK" if ok else "digits_jax: FAILED (more than 1 point apart, or below 96%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
