"""PyTorch eager peer of the benchmark suite (B1-B7, B10-B12), mirroring autograd_bench.c.

    python3 bench/torch_bench.py BENCH THREADS REPS

Prints one "RESULT {json}" line per measured case. B7 and B12 are B1 reported under their
names: the reference for the gradients of B7's replay, and B12's peer (Autograd driven from
Python, python_bench.py), measured beside it. B6 measures one repetition per process
(the driver starts a fresh process for each). The exact work is defined in bench/README.md."""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_common import (CHAIN_LEAVES, now, parse_args, proc_status_mib,  # noqa: E402
                          reset_peak_rss, result, settle, splitmix64)

PEER = "torch"


def filled(shape, dtype, phase, scale, requires_grad=False):
    """The deterministic fill of bench_common.h: scale * sin(phase + 0.37 * i), in float64."""
    n = math.prod(shape)
    t = (torch.sin(torch.arange(n, dtype=torch.float64) * 0.37 + phase) * scale)
    t = t.reshape(shape).to(dtype).contiguous()
    return t.requires_grad_(requires_grad)


# ---- B1 and B6: the scalar op chain ----

def chain_leaves():
    return [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in CHAIN_LEAVES]


def chain_forward(x, cycles):
    v = x[0]
    for i in range(cycles):
        v = v + x[i % 4]
        v = v * x[(i + 1) % 4]
        v = torch.tanh(v)
        v = torch.relu(v)
    return v


def bench_b1(threads, reps, bench="B1"):
    cycles, ops = 2500, 10000
    x = chain_leaves()
    samples, value, grads = [], 0.0, []
    for r in range(-1, reps):  # r = -1: untimed warm-up
        t0 = now()
        v = chain_forward(x, cycles)
        v.backward()
        if r < 0:
            value = v.item()
        del v  # releases the graph inside the timed region
        t1 = now()
        if r >= 0:
            samples.append((t1 - t0) / ops * 1e6)
        grads = [xi.grad.item() if xi.grad is not None else 0.0 for xi in x]
        for xi in x:
            xi.grad = None
    result(bench, "chain10k", PEER, threads, "us_per_op", samples, {"value": value, "grads": grads})


def bench_b6(threads):
    x = chain_leaves()
    reset_ok = reset_peak_rss()
    rss0 = proc_status_mib("VmRSS")
    t0 = now()
    v = chain_forward(x, 250000)
    t1 = now()
    v.backward()
    t2 = now()
    value = v.item()
    del v
    t3 = now()
    mem = proc_status_mib("VmHWM") - rss0
    info = {"value": value, "release_s": t3 - t2, "peak_reset": reset_ok}
    result("B6", "forward_s", PEER, threads, "s", [t1 - t0], info)
    result("B6", "backward_s", PEER, threads, "s", [t2 - t1], info)
    result("B6", "mem_mib", PEER, threads, "MiB", [mem], info)


# ---- B2 and B3: MLP training with raw parameters and torch.optim.SGD ----

def make_layers(sizes, dtype, phases):
    """Parameters [w0, b0, w1, b1, ...]; weight (out, in) and bias (out), scale 1/sqrt(in)."""
    params = []
    for (fan_in, fan_out), (wp, bp) in zip(zip(sizes, sizes[1:]), phases):
        scale = 1.0 / math.sqrt(fan_in)
        params.append(filled((fan_out, fan_in), dtype, wp, scale, True))
        params.append(filled((fan_out,), dtype, bp, scale, True))
    return params


def mlp_forward(params, h):
    layers = len(params) // 2
    for l in range(layers):
        h = F.linear(h, params[2 * l], params[2 * l + 1])
        if l + 1 < layers:
            h = torch.relu(h)
    return h


def train_bench(bench, case, metric, unit, params, loss_fn, warmup, steps, threads, reps):
    opt = torch.optim.SGD(params, lr=0.01)

    def step(want_loss):
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item() if want_loss else 0.0

    first_loss = 0.0
    for s in range(warmup):
        loss = step(s == 0)
        if s == 0:
            first_loss = loss
    samples = []
    for _ in range(reps):
        t0 = now()
        for _ in range(steps):
            step(False)
        samples.append((now() - t0) / steps * unit)
    result(bench, case, PEER, threads, metric, samples,
           {"first_loss": first_loss, "steps_per_rep": steps})


def bench_b2(threads, reps):
    x = filled((16, 64), torch.float64, 0.1, 1.0)
    y = filled((16, 1), torch.float64, 0.2, 1.0)
    params = make_layers([64, 32, 1], torch.float64, [(0.3, 0.4), (0.5, 0.6)])
    train_bench("B2", "mlp64", "us_per_step", 1e6, params,
                lambda: F.mse_loss(mlp_forward(params, x), y), 20, 200, threads, reps)


def bench_b3(threads, reps):
    x = filled((256, 784), torch.float32, 0.1, 1.0)
    labels = torch.arange(256, dtype=torch.int64) % 10
    params = make_layers([784, 512, 512, 10], torch.float32, [(0.3, 0.4), (0.5, 0.6), (0.7, 0.8)])
    train_bench("B3", "mlp784", "ms_per_step", 1e3, params,
                lambda: F.cross_entropy(mlp_forward(params, x), labels), 2, 5, threads, reps)


# ---- B4: torch.mm (allocates its result) ----

def bench_b4(threads, reps):
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        for n in (1024, 2048):
            a = filled((n, n), dtype, 0.1, 1.0)
            b = filled((n, n), dtype, 0.2, 1.0)
            flops = 2.0 * n ** 3
            samples = []
            for r in range(-1, reps):  # r = -1: warm-up
                t0 = now()
                c = torch.mm(a, b)
                del c
                dt = now() - t0
                if r >= 0:
                    samples.append(flops / dt / 1e9)
            result("B4", f"{tag}_{n}", PEER, threads, "gflops", samples)


# ---- B5: elementwise on 16M float32 ----

def timed_gbps(fn, nbytes, reps):
    samples = []
    for r in range(-1, reps):  # r = -1: warm-up
        t0 = now()
        fn()
        dt = now() - t0
        if r >= 0:
            samples.append(nbytes / dt / 1e9)
    return samples


def bench_b5(threads, reps):
    n = 16 * 1024 * 1024
    a = filled((n,), torch.float32, 0.1, 1.0)
    b = filled((n,), torch.float32, 0.2, 1.0)
    out = torch.empty_like(a)
    cases = [
        ("add", lambda: a + b, 12), ("mul", lambda: a * b, 12), ("exp", lambda: torch.exp(a), 8),
        ("add_out", lambda: torch.add(a, b, out=out), 12),
        ("mul_out", lambda: torch.mul(a, b, out=out), 12),
        ("exp_out", lambda: torch.exp(a, out=out), 8),
    ]
    for name, fn, bytes_per_elem in cases:
        # The result of the ordinary form is dropped at once, so it is freed inside the timing.
        result("B5", name, PEER, threads, "gbps", timed_gbps(fn, bytes_per_elem * n, reps))

    a.requires_grad_(True)
    b.requires_grad_(True)
    samples = []
    for r in range(-1, reps):
        t0 = now()
        (a * b).sum().backward()
        dt = now() - t0
        if r >= 0:
            samples.append(32.0 * n / dt / 1e9)  # nominal 8 x 4 bytes per element
        a.grad = None  # cleared between repetitions, untimed
        b.grad = None
    result("B5", "sum_mul_fwd_bwd", PEER, threads, "gbps", samples)


# ---- B10 and B11: a small transformer's and a small CNN's training step (bench/README.md) ----

NBATCH = 4  # batches cycled through, one copied into the step's input tensors each step


def transformer_params():
    """B10's parameters in autograd_bench.c's order (tf_spec_of): parameter k filled with phase
    0.3 + 0.1 k, embeddings scale 1, linear weights (out, in) and biases scale 1/sqrt(in),
    layer-norm weights 1 and biases 0."""
    V, T, D, Hd = 27, 16, 64, 256
    block = [((D,), 0, "ones"), ((D,), 0, "zeros"), ((3 * D, D), D, "fill"), ((3 * D,), D, "fill"),
             ((D, D), D, "fill"), ((D,), D, "fill"), ((D,), 0, "ones"), ((D,), 0, "zeros"),
             ((Hd, D), D, "fill"), ((Hd,), D, "fill"), ((D, Hd), Hd, "fill"), ((D,), Hd, "fill")]
    specs = ([((V, D), 0, "fill"), ((T, D), 0, "fill")] + block * 2
             + [((D,), 0, "ones"), ((D,), 0, "zeros"), ((V, D), D, "fill"), ((V,), D, "fill")])
    params = []
    for k, (shape, fan_in, init) in enumerate(specs):
        if init == "ones":
            params.append(torch.ones(shape, requires_grad=True))
        elif init == "zeros":
            params.append(torch.zeros(shape, requires_grad=True))
        else:
            scale = 1.0 / math.sqrt(fan_in) if fan_in else 1.0
            params.append(filled(shape, torch.float32, 0.3 + 0.1 * k, scale, True))
    return params


def transformer_loss(p, idx, targets):
    """B10's forward and loss, as autograd_bench.c's tf_step."""
    B, T, D, H = 32, 16, 64, 4
    x = F.embedding(idx, p[0]) + p[1]
    for l in range(2):
        q = p[2 + 12 * l: 14 + 12 * l]
        h = F.layer_norm(x, (D,), q[0], q[1], 1e-5)
        qkv = F.linear(h, q[2], q[3])
        heads = [part.reshape(B, T, H, D // H).transpose(1, 2) for part in qkv.split(D, dim=2)]
        y = F.scaled_dot_product_attention(*heads, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(y, q[4], q[5])
        h = F.layer_norm(x, (D,), q[6], q[7], 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, q[8], q[9])), q[10], q[11])
    h = F.layer_norm(x, (D,), p[26], p[27], 1e-5)
    logits = F.linear(h, p[28], p[29])
    return F.cross_entropy(logits.reshape(B * T, 27), targets)


def cnn_loss(p, x, labels):
    """B11's forward and loss, as autograd_bench.c's cnn_step."""
    h = F.max_pool2d(torch.relu(F.conv2d(x, p[0], p[1], padding=1)), 2)
    h = F.max_pool2d(torch.relu(F.conv2d(h, p[2], p[3], padding=1)), 2)
    return F.cross_entropy(F.linear(h.reshape(64, 128), p[4], p[5]), labels)


def batched_train_bench(bench, case, params, opt, loss_fn, data, warmup, steps, threads, reps):
    """Each step copies batch `step % NBATCH` of data (a list of (x, y)) into the input tensors,
    then forward, loss, backward, the optimizer step and zero_grad (gradients to None)."""
    x, y = torch.empty_like(data[0][0]), torch.empty_like(data[0][1])
    step_no = 0

    def step(want_loss):
        nonlocal step_no
        bx, by = data[step_no % NBATCH]
        step_no += 1
        x.copy_(bx)
        y.copy_(by)
        loss = loss_fn(params, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item() if want_loss else 0.0

    first_loss = last_loss = 0.0
    for s in range(warmup):
        last_loss = step(True)
        if s == 0:
            first_loss = last_loss
    samples = []
    for _ in range(reps):
        t0 = now()
        for _ in range(steps):
            step(False)
        samples.append((now() - t0) / steps * 1e3)
    result(bench, case, PEER, threads, "ms_per_step", samples,
           {"first_loss": first_loss, "last_warmup_loss": last_loss, "steps_per_rep": steps})


def bench_b10(threads, reps):
    draws = splitmix64(10, NBATCH * 2 * 512)
    data = []
    for k in range(NBATCH):
        xs, ys = draws[1024 * k: 1024 * k + 512], draws[1024 * k + 512: 1024 * (k + 1)]
        data.append((torch.tensor([v % 27 for v in xs], dtype=torch.int64).reshape(32, 16),
                     torch.tensor([v % 27 for v in ys], dtype=torch.int64)))
    params = transformer_params()
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    batched_train_bench("B10", "transformer", params, opt, transformer_loss, data, 3, 10, threads, reps)


def bench_b11(threads, reps):
    labels = splitmix64(11, NBATCH * 64)
    data = [(filled((64, 1, 8, 8), torch.float32, 0.1 + k, 1.0),
             torch.tensor([v % 10 for v in labels[64 * k: 64 * (k + 1)]], dtype=torch.int64))
            for k in range(NBATCH)]
    shapes = [((16, 1, 3, 3), 9), ((16,), 9), ((32, 16, 3, 3), 144), ((32,), 144), ((10, 128), 128), ((10,), 128)]
    params = [filled(shape, torch.float32, 0.3 + 0.1 * k, 1.0 / math.sqrt(fan_in), True)
              for k, (shape, fan_in) in enumerate(shapes)]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    batched_train_bench("B11", "cnn", params, opt, cnn_loss, data, 3, 20, threads, reps)


def main():
    bench, threads, reps = parse_args("torch_bench.py")
    torch.set_num_threads(threads)
    settle()
    runners = {"B1": bench_b1, "B2": bench_b2, "B3": bench_b3, "B4": bench_b4, "B5": bench_b5,
               "B7": lambda threads, reps: bench_b1(threads, reps, "B7"), "B10": bench_b10,
               "B11": bench_b11, "B12": lambda threads, reps: bench_b1(threads, reps, "B12")}
    if bench == "B6":
        bench_b6(threads)
    elif bench in runners:
        runners[bench](threads, reps)
    else:
        sys.exit(f"torch_bench.py: unknown benchmark {bench}")


if __name__ == "__main__":
    main()
