#!/usr/bin/env python3
"""The CNN training of examples/cnn_digits.c, repeated in PyTorch: the side-by-side check.

Same data (examples/data/digits.csv, pixels / 16, float32), same train/test split (digits.c's
SplitMix64 Fisher-Yates shuffle, reimplemented here), same model (conv 1->16 3x3 pad 1, relu,
max pool 2; conv 16->32 3x3 pad 1, relu, max pool 2; flatten 128; linear -> 10), same loss (mean
softmax cross-entropy), same optimizer (torch.optim.AdamW with the C program's hyper-parameters)
and the same learning rate at every step (linear warm-up then cosine decay, computed here and
checked against ag_lr_warmup_cosine). The initial weights (ag_tensor_init, Kaiming uniform) and
the batch order (ag_randperm drawn from an ag_generator each epoch) are drawn through the Python
package libautograd, which wraps the same initialisers and generators the C program calls: the
same numbers, bit for bit. From there on the training is PyTorch's alone.

It then compares its final test accuracy with the C program's, which it takes from
--c-accuracy PERCENT, or gets by running the C binary given with --c-binary (default: compile
examples/cnn_digits.c against the library into .build/examples/cnn_digits and run that). It
exits non-zero if the two differ by more than 1 point. It prints its training step's time as
the C program does (ms per step: the median of the epochs' means from epoch 2 on, each step timed
from gathering the batch to reading the loss), at --threads N (torch.set_num_threads; default: PyTorch's own).

The library is found as the package finds it: AUTOGRAD_LIBRARY, else AUTOGRAD_LIB (set by
scripts/reference-tests.sh), else .build/release/libautograd.so. The package is this checkout's
(bindings/python), whatever version pip may have installed.

Usage: python3 examples/cnn_digits_torch.py [--csv PATH] [--threads N]
                                            [--c-accuracy PERCENT | --c-binary PATH]
"""

import argparse
import ctypes
import math
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIB = os.environ.get("AUTOGRAD_LIB") or os.path.join(REPO, ".build", "release", "libautograd.so")
os.environ.setdefault("AUTOGRAD_LIBRARY", DEFAULT_LIB)
sys.path.insert(0, os.path.join(REPO, "bindings", "python"))  # this checkout's package, not an installed one
import libautograd as ag  # noqa: E402
from libautograd._library import lib as aglib  # noqa: E402  (the raw C calls, for the generator)

# The experiment's constants: the same as in examples/cnn_digits.c.
N_SAMPLES, N_PIXELS, SIDE, N_CLASSES, N_TEST = 1797, 64, 8, 10, 360
C1, C2, FLAT = 16, 32, 128
BATCH, EPOCHS, WARMUP_STEPS = 64, 30, 22
LEARNING_RATE, MIN_LEARNING_RATE, WEIGHT_DECAY = 0.01, 0.0, 1e-4
BETAS, EPS = (0.9, 0.999), 1e-8
SPLIT_SEED, ORDER_SEED, CONV1_SEED, CONV2_SEED, FC_SEED = 2024, 7, 1, 2, 3
AG_INT64 = 3

MASK64 = (1 << 64) - 1


def splitmix64(seed):
    """digits.c's generator: an endless stream of 64-bit outputs."""
    state = seed & MASK64
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        yield z ^ (z >> 31)


def split(n):
    """digits.c's split: a Fisher-Yates shuffle (j = out mod (i + 1)); the first N_TEST test."""
    perm = list(range(n))
    rng = splitmix64(SPLIT_SEED)
    for i in range(n - 1, 0, -1):
        j = next(rng) % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return np.array(perm[:N_TEST]), np.array(perm[N_TEST:])


def lr_at(step, total_steps):
    """Linear warm-up then cosine decay (the formula in include/autograd.h)."""
    if step < WARMUP_STEPS:
        return LEARNING_RATE * (step + 1) / WARMUP_STEPS
    if step >= total_steps:
        return MIN_LEARNING_RATE
    progress = (step - WARMUP_STEPS) / (total_steps - WARMUP_STEPS)
    return MIN_LEARNING_RATE + (LEARNING_RATE - MIN_LEARNING_RATE) * (1 + math.cos(math.pi * progress)) / 2


def initial_weight(shape, seed):
    """ag_tensor_init(shape, AG_INIT_KAIMING_UNIFORM, seed, AG_FLOAT32), through libautograd."""
    return torch.from_numpy(ag.kaiming_uniform(*shape, seed=seed, dtype=ag.float32).numpy())


class BatchOrder:
    """An ag_generator seeded with ORDER_SEED; each call draws ag_randperm(n) from it."""

    def __init__(self, seed):
        self.handle = ctypes.c_uint64(0)
        assert aglib.ag_generator_new(ctypes.byref(self.handle), seed) == 0

    def permutation(self, n):
        t = ctypes.c_uint64(0)
        assert aglib.ag_randperm(ctypes.byref(t), n, self.handle.value) == 0
        out = np.empty(n, dtype=np.int64)
        assert aglib.ag_tensor_copy_data(out.ctypes.data, n, AG_INT64, t.value) == 0
        assert aglib.ag_tensor_free(t.value) == 0
        return torch.from_numpy(out)

    def close(self):
        assert aglib.ag_generator_free(self.handle.value) == 0


def forward(params, x):
    w1, b1, w2, b2, w3, b3 = params
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, w2, b2, padding=1)), 2)
    return F.linear(h.reshape(-1, FLAT), w3, b3)


def count_correct(params, x, y):
    with torch.no_grad():
        return int((forward(params, x).argmax(dim=1) == y).sum())


def c_run(args):
    """The C program's final test accuracy in percent, from --c-accuracy or by running it, and its
    per-epoch mean training losses (None with --c-accuracy)."""
    if args.c_accuracy is not None:
        return args.c_accuracy, None
    binary = args.c_binary
    if binary is None:
        libdir = os.path.dirname(os.path.abspath(DEFAULT_LIB))
        binary = os.path.join(REPO, ".build", "examples", "cnn_digits")
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        cmd = ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-I", os.path.join(REPO, "include"),
               os.path.join(REPO, "examples", "cnn_digits.c"), "-o", binary, "-L", libdir, "-lautograd",
               "-Wl,-rpath," + libdir, "-lm"]
        print("+ " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    cmd = [binary, "--svg", os.path.join(os.path.dirname(os.path.abspath(binary)), "cnn_digits.svg"), args.csv]
    if args.threads:
        cmd[1:1] = ["--threads", str(args.threads)]
    print("+ " + " ".join(cmd))
    run = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write("".join("  | " + line + "\n" for line in run.stdout.splitlines()))
    found = re.search(r"final test accuracy: ([0-9.]+)%", run.stdout)
    if found is None:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"cnn_digits_torch: the C program (exit {run.returncode}) printed no final accuracy")
    losses = [float(x) for x in re.findall(r"^epoch +\d+ +loss ([0-9.]+) ", run.stdout, re.M)]
    return float(found.group(1)), losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", default=os.path.join(REPO, "examples", "data", "digits.csv"))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (and the C run's --threads)")
    parser.add_argument("--c-accuracy", type=float, help="the C program's final test accuracy, in percent")
    parser.add_argument("--c-binary", help="a compiled examples/cnn_digits.c to run for its accuracy")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    # The data and the split: as digits.c.
    rows = np.loadtxt(args.csv, delimiter=",", comments="#", dtype=np.int64)
    assert rows.shape == (N_SAMPLES, N_PIXELS + 1), rows.shape
    pixels = torch.from_numpy((rows[:, :N_PIXELS].astype(np.float32) / np.float32(16)).reshape(-1, 1, SIDE, SIDE))
    labels = torch.from_numpy(rows[:, N_PIXELS])
    test_idx, train_idx = split(N_SAMPLES)
    x_train, y_train = pixels[train_idx].contiguous(), labels[train_idx].contiguous()
    x_test, y_test = pixels[test_idx].contiguous(), labels[test_idx].contiguous()
    n_train = len(train_idx)
    steps_per_epoch = n_train // BATCH
    total_steps = EPOCHS * steps_per_epoch

    # The initial parameters: Kaiming-uniform weights from ag_tensor_init, zero biases.
    params = [initial_weight((C1, 1, 3, 3), CONV1_SEED), torch.zeros(C1),
              initial_weight((C2, C1, 3, 3), CONV2_SEED), torch.zeros(C2),
              initial_weight((N_CLASSES, FLAT), FC_SEED), torch.zeros(N_CLASSES)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    schedule = [lr_at(s, total_steps) for s in range(total_steps)]
    worst = max(abs(a - ag.lr_warmup_cosine(s, WARMUP_STEPS, total_steps, LEARNING_RATE, MIN_LEARNING_RATE))
                for s, a in enumerate(schedule))
    assert worst <= 1e-15, f"the schedule differs from ag_lr_warmup_cosine by {worst}"
    order_rng = BatchOrder(ORDER_SEED)

    print(f"cnn_digits_torch: {n_train} training and {N_TEST} test samples; the same CNN in PyTorch "
          f"{torch.__version__} (float32), AdamW lr {LEARNING_RATE:g} (warm-up {WARMUP_STEPS} steps, cosine), "
          f"weight decay {WEIGHT_DECAY:g}, batch {BATCH}, {EPOCHS} epochs of {steps_per_epoch} steps; "
          f"{torch.get_num_threads()} thread(s)")
    step = 0
    correct_test = 0
    epoch_losses = []
    epoch_ms = []
    for epoch in range(1, EPOCHS + 1):
        order = order_rng.permutation(n_train)
        loss_sum = 0.0
        seconds = 0.0
        for b in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = schedule[step]
            t0 = time.perf_counter()
            idx = order[b * BATCH:(b + 1) * BATCH]
            x, y = x_train[idx], y_train[idx]
            loss = F.cross_entropy(forward(params, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            seconds += time.perf_counter() - t0
            loss_sum += value
            step += 1
        epoch_ms.append(1e3 * seconds / steps_per_epoch)
        correct_train = count_correct(params, x_train, y_train)
        correct_test = count_correct(params, x_test, y_test)
        epoch_losses.append(loss_sum / steps_per_epoch)
        print(f"epoch {epoch:2d}  loss {epoch_losses[-1]:.4f}  train acc {100 * correct_train / n_train:6.2f}%  "
              f"test acc {100 * correct_test / N_TEST:6.2f}% ({correct_test:3d}/{N_TEST})  "
              f"{epoch_ms[-1]:.3f} ms/step  {time.perf_counter() - start:5.2f} s", flush=True)
    order_rng.close()
    later = epoch_ms[1:]  # epoch 1 warms up
    print(f"training step (batch {BATCH}, {torch.get_num_threads()} thread(s), PyTorch eager): "
          f"{statistics.median(later):.3f} ms/step (median of epochs 2-{EPOCHS}; least {min(later):.3f})")
    torch_percent = 100 * correct_test / N_TEST
    print(f"final test accuracy (PyTorch): {torch_percent:.2f}% ({correct_test} of {N_TEST} test digits)")

    c_percent, c_losses = c_run(args)
    if c_losses is not None and len(c_losses) == EPOCHS:
        worst = max(abs(a - b) for a, b in zip(c_losses, epoch_losses))
        print(f"per-epoch mean training loss, C vs PyTorch: largest difference {worst:.1e} (C prints 4 decimals)")
    gap = abs(torch_percent - c_percent)
    print(f"C (libautograd) {c_percent:.2f}%  vs  PyTorch {torch_percent:.2f}%: difference {gap:.2f} points")
    ok = gap <= 1.0
    print("cnn_digits_torch: OK" if ok else "cnn_digits_torch: FAILED (more than 1 point apart)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
