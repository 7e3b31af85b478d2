#!/usr/bin/env python3
"""The training of examples/char_transformer.c, repeated in PyTorch: the side-by-side check.

It runs the C program (compiled against libautograd.so into .build/examples/char_transformer, or
the binary given with --c-binary) for --steps steps, asking it to write its initial parameters
(--dump-init: float32, in the C program's parameter order) and the window offsets of every batch
(--dump-batches: int64, 32 per step). Then it trains the same model in PyTorch, float32:

  - the same data: the a-z words of the same word list, split by the same SplitMix64 Fisher-Yates
    shuffle (reimplemented here) into the same two token streams, checked against the FNV-1a
    hashes the C program prints;
  - the same initial weights and batches, read from the two files;
  - the same model (GPT-2 style, pre-norm, 2 blocks, width 64, 4 heads, context 16, exact GELU,
    layer-norm eps 1e-5), loss (torch.nn.functional.cross_entropy on the (B*T, 27) logits),
    learning-rate schedule (ag_lr_warmup_cosine's formula, checked against the rates the C
    program prints), gradient clipping (torch.nn.utils.clip_grad_norm_ to 1.0) and optimizer
    (torch.optim.AdamW, betas 0.9, 0.99, eps 1e-8, weight decay 0.01 on every parameter);
  - the same validation measure: the mean cross-entropy over the validation stream cut into
    consecutive windows of 16, in nats per character.

It prints both validation curves and exits non-zero unless its final validation loss is within
2% of the C program's (--tolerance), and both are below the C program's own threshold.

Usage: python3 examples/char_transformer_torch.py [--steps N] [--threads N] [--c-binary PATH]
                                                   [--words PATH]
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The experiment's constants: the same as in examples/char_transformer.c.
VOCAB, CONTEXT, WIDTH, HEADS, LAYERS, HIDDEN, BATCH = 27, 16, 64, 4, 2, 256, 32
DEFAULT_STEPS = 4000
BASE_LR, MIN_LR = 2e-3, 2e-4
BETAS, ADAM_EPS, WEIGHT_DECAY = (0.9, 0.99), 1e-8, 0.01
CLIP_NORM, LN_EPS = 1.0, 1e-5
SPLIT_SEED = 2024
EVAL_CHUNK = 256
MASK64 = (1 << 64) - 1

# The parameters in the C program's order (model_new / param_specs) with their shapes.
BLOCK = [("ln1.weight", (WIDTH,)), ("ln1.bias", (WIDTH,)), ("attn.weight", (3 * WIDTH, WIDTH)),
         ("attn.bias", (3 * WIDTH,)), ("proj.weight", (WIDTH, WIDTH)), ("proj.bias", (WIDTH,)),
         ("ln2.weight", (WIDTH,)), ("ln2.bias", (WIDTH,)), ("fc.weight", (HIDDEN, WIDTH)),
         ("fc.bias", (HIDDEN,)), ("fc2.weight", (WIDTH, HIDDEN)), ("fc2.bias", (WIDTH,))]
SPECS = ([("tok_emb", (VOCAB, WIDTH)), ("pos_emb", (CONTEXT, WIDTH))]
         + [(f"blocks.{l}.{name}", shape) for l in range(LAYERS) for name, shape in BLOCK]
         + [("ln_f.weight", (WIDTH,)), ("ln_f.bias", (WIDTH,)), ("head.weight", (VOCAB, WIDTH)),
            ("head.bias", (VOCAB,))])


def splitmix64(state):
    """One SplitMix64 step: (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def shuffle(a, seed):
    """char_transformer.c's Fisher-Yates shuffle, in place."""
    state = seed
    for i in range(len(a) - 1, 0, -1):
        state, out = splitmix64(state)
        j = out % (i + 1)
        a[i], a[j] = a[j], a[i]


def load_streams(path):
    """The validation and training token streams of char_transformer.c."""
    with open(path, "rb") as f:
        words = [w for w in (line.rstrip(b"\r\n") for line in f) if re.fullmatch(rb"[a-z]+", w)]
    order = list(range(len(words)))
    shuffle(order, SPLIT_SEED)
    n_val = len(words) // 10

    def stream(indices):
        text = b"." + b"".join(words[k] + b"." for k in indices)
        chars = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
        return np.where(chars == ord("."), 0, chars - ord("a") + 1)

    return len(words), stream(order[:n_val]), stream(order[n_val:])


def fnv1a64(tokens):
    h = 0xCBF29CE484222325
    for t in tokens.tolist():
        h = ((h ^ t) * 0x100000001B3) & MASK64
    return h


def lr_at(step, warmup, total):
    """ag_lr_warmup_cosine's formula (include/autograd.h)."""
    if step < warmup:
        return BASE_LR * (step + 1) / warmup
    if step >= total:
        return MIN_LR
    return MIN_LR + (BASE_LR - MIN_LR) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def forward(p, idx):
    """The logits (B*T, 27) for the windows idx (B, T)."""
    b, t = idx.shape
    x = p["tok_emb"][idx] + p["pos_emb"][:t]
    for l in range(LAYERS):
        q = lambda name: p[f"blocks.{l}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (WIDTH,), q("ln1.weight"), q("ln1.bias"), LN_EPS)
        qkv = F.linear(h, q("attn.weight"), q("attn.bias"))
        heads = [part.reshape(b, t, HEADS, WIDTH // HEADS).transpose(1, 2) for part in qkv.split(WIDTH, dim=2)]
        y = F.scaled_dot_product_attention(*heads, is_causal=True)
        y = y.transpose(1, 2).reshape(b, t, WIDTH)
        x = x + F.linear(y, q("proj.weight"), q("proj.bias"))
        h = F.layer_norm(x, (WIDTH,), q("ln2.weight"), q("ln2.bias"), LN_EPS)
        x = x + F.linear(F.gelu(F.linear(h, q("fc.weight"), q("fc.bias"))), q("fc2.weight"), q("fc2.bias"))
    h = F.layer_norm(x, (WIDTH,), p["ln_f.weight"], p["ln_f.bias"], LN_EPS)
    return F.linear(h, p["head.weight"], p["head.bias"]).reshape(b * t, VOCAB)


@torch.no_grad()
def validation_loss(p, val):
    windows = (len(val) - 1) // CONTEXT
    total = 0.0
    for first in range(0, windows, EVAL_CHUNK):
        n = min(EVAL_CHUNK, windows - first)
        x = val[first * CONTEXT:(first + n) * CONTEXT].reshape(n, CONTEXT)
        y = val[first * CONTEXT + 1:(first + n) * CONTEXT + 1].reshape(n * CONTEXT)
        total += float(F.cross_entropy(forward(p, x), y)) * n * CONTEXT
    return total / (windows * CONTEXT)


def run_c(args, workdir):
    """Runs the C program; returns its output and the paths of its two dumps."""
    binary = args.c_binary
    if binary is None:
        lib = os.environ.get("AUTOGRAD_LIB") or os.path.join(REPO, ".build", "release", "libautograd.so")
        libdir = os.path.abspath(os.path.dirname(lib))
        binary = os.path.join(REPO, ".build", "examples", "char_transformer")
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        cmd = ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-I", os.path.join(REPO, "include"),
               os.path.join(REPO, "examples", "char_transformer.c"), "-o", binary, "-L", libdir, "-lautograd",
               "-Wl,-rpath," + libdir, "-lm"]
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    init, batches = os.path.join(workdir, "init.f32"), os.path.join(workdir, "batches.i64")
    cmd = [binary, "--steps", str(args.steps), "--words", args.words, "--dump-init", init, "--dump-batches", batches,
           "--svg", os.path.join(workdir, "c.svg"), "--eval-every", str(args.eval_every)]
    cmd += ["--threads", str(args.threads)]
    print("+ " + " ".join(cmd), flush=True)
    run = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write("".join("  | " + line + "\n" for line in run.stdout.splitlines()))
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"char_transformer_torch: the C program failed (exit {run.returncode})")
    return run.stdout, init, batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both (default 1: torch's OpenMP threads slow to a crawl on a busy machine)")
    parser.add_argument("--words", default="/usr/share/dict/american-english")
    parser.add_argument("--c-binary", help="a compiled examples/char_transformer.c")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative, on the final validation loss")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as workdir:
        out, init_path, batches_path = run_c(args, workdir)
        init = np.fromfile(init_path, dtype=np.float32)
        offsets = np.fromfile(batches_path, dtype=np.int64).reshape(-1, BATCH)

    # The data, checked against the C program's.
    n_words, val, train = load_streams(args.words)
    hashes = re.search(r"(\d+) train \((\d+) tokens, fnv1a64 ([0-9a-f]+)\), (\d+) validation \((\d+) tokens, "
                       r"fnv1a64 ([0-9a-f]+)\)", out)
    ours = (len(train), fnv1a64(train), len(val), fnv1a64(val))
    theirs = (int(hashes.group(2)), int(hashes.group(3), 16), int(hashes.group(5)), int(hashes.group(6), 16))
    if ours != theirs:
        raise SystemExit(f"char_transformer_torch: the token streams differ from the C program's: {ours} vs {theirs}")
    print(f"torch: the same {n_words} words and token streams as the C program (lengths and FNV-1a hashes)")

    # The initial parameters and the batches, from the C program's files.
    sizes = [math.prod(shape) for _, shape in SPECS]
    if init.size != sum(sizes) or offsets.shape[0] != args.steps:
        raise SystemExit(f"char_transformer_torch: dumps of {init.size} values and {offsets.shape[0]} batches, "
                         f"expected {sum(sizes)} and {args.steps}")
    params, at = {}, 0
    for (name, shape), n in zip(SPECS, sizes):
        params[name] = torch.tensor(init[at:at + n].reshape(shape), requires_grad=True)
        at += n
    plist = list(params.values())
    opt = torch.optim.AdamW(plist, lr=BASE_LR, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    train_t, val_t = torch.from_numpy(train), torch.from_numpy(val)
    window = torch.arange(CONTEXT)

    # The learning rates the C program printed, against the formula.
    warmup = args.steps // 20
    printed = [(int(s), float(r)) for s, r in re.findall(r"^step +(\d+)/\d+ +loss [0-9.]+ +lr ([0-9.]+)", out, re.M)]
    worst_lr = max(abs(lr_at(s - 1, warmup, args.steps) - r) for s, r in printed)
    if worst_lr > 1e-6:
        raise SystemExit(f"char_transformer_torch: the C program's learning rates differ from the formula by {worst_lr}")

    c_evals = {int(s): float(v) for s, v in re.findall(r"^step +(\d+) +validation loss ([0-9.]+)", out, re.M)}
    print(f"torch: training {args.steps} steps, float32, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    # Before training: the same weights must give the same validation loss (float32 both).
    start_loss = validation_loss(params, val_t)
    print(f"step     0  validation loss: torch {start_loss:.4f}, C {c_evals[0]:.4f}")
    if abs(start_loss - c_evals[0]) > 1e-4:
        raise SystemExit("char_transformer_torch: the untrained models already disagree (not the same model)")
    losses, train_seconds, evals = [], 0.0, {}
    for step in range(args.steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, warmup, args.steps)
        starts = torch.from_numpy(offsets[step])[:, None] + window
        x, y = train_t[starts], train_t[starts + 1].reshape(-1)
        loss = F.cross_entropy(forward(params, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, CLIP_NORM)
        opt.step()
        losses.append(loss.item())
        train_seconds += time.perf_counter() - t0
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            evals[step + 1] = validation_loss(params, val_t)
            c = c_evals.get(step + 1)
            print(f"step {step + 1:5d}  mean loss {np.mean(losses[-args.eval_every:]):.4f}  validation loss: "
                  f"torch {evals[step + 1]:.4f}, C {c if c is None else f'{c:.4f}'}", flush=True)

    c_final = float(re.search(r"^validation loss: ([0-9.]+)", out, re.M).group(1))
    c_ms = float(re.search(r"^training: .* ([0-9.]+) ms/step", out, re.M).group(1))
    t_final = evals[args.steps]
    gap = abs(t_final - c_final) / c_final
    print(f"torch: {args.steps} steps in {train_seconds:.2f} s: {1e3 * train_seconds / args.steps:.2f} ms/step "
          f"(C: {c_ms:.2f} ms/step)")
    print(f"validation loss (nats per character): C (libautograd) {c_final:.6f}  vs  PyTorch {t_final:.6f}: "
          f"difference {100 * gap:.3f}% (tolerance {100 * args.tolerance:g}%)")
    limit = 2.8 if args.steps < 1000 else 2.3  # char_transformer.c's MAX_VAL_LOSS_SHORT, MAX_VAL_LOSS
    ok = gap <= args.tolerance and t_final < limit
    print("char_transformer_torch: OK" if ok else "char_transformer_torch: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
