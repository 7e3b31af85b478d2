"""Autograd driven from Python (the package libautograd, bindings/python) for B12.

    python3 bench/python_bench.py BENCH THREADS REPS

B12 is B1's chain written in Python against the installed libautograd package, exactly as
torch_bench.py writes it against PyTorch: four 0-d float64 leaves requiring grad, 2,500 cycles
of `v = v + x[i % 4]; v = v * x[(i + 1) % 4]; v = ag.tanh(v); v = ag.relu(v)`, backward from
`v` and `del v`, all timed; the unit is microseconds per op. Each rebinding of `v` drops the
previous intermediate, whose handle the package frees at once, as autograd_bench.c's B1 frees
it. It measures the per-op path of the package (argument conversion, the call, wrapping the
result, freeing handles): compiled by `pip install` (libautograd._native) unless the extension
is missing or LIBAUTOGRAD_PURE_PYTHON=1 is set; `info.path` records which ran.

Prints one "RESULT {json}" line per measured case, reported under the peer name "autograd"."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import libautograd as ag  # noqa: E402

from bench_common import CHAIN_LEAVES, now, parse_args, result  # noqa: E402

PEER = "autograd"


def chain_forward(x, cycles):
    v = x[0]
    for i in range(cycles):
        v = v + x[i % 4]
        v = v * x[(i + 1) % 4]
        v = ag.tanh(v)
        v = ag.relu(v)
    return v


def bench_b12(threads, reps):
    cycles, ops = 2500, 10000
    x = [ag.tensor(value, dtype=ag.float64, requires_grad=True) for value in CHAIN_LEAVES]
    samples, value, grads = [], 0.0, []
    for r in range(-1, reps):  # r = -1: untimed warm-up
        t0 = now()
        v = chain_forward(x, cycles)
        v.backward()
        if r < 0:
            value = v.item()
        del v  # frees the last handle, and with it the graph, inside the timed region
        t1 = now()
        if r >= 0:
            samples.append((t1 - t0) / ops * 1e6)
        grads = [0.0 if xi.grad is None else xi.grad.item() for xi in x]  # untimed
        for xi in x:
            xi.zero_grad()
    live = ag.live_handle_count()
    result("B12", "chain10k", PEER, threads, "us_per_op", samples,
           {"value": value, "grads": grads, "native": ag.native_enabled(),
            "path": ag.native_status(), "library": ag.library_path(),
            "live_handles_after": live})


def main():
    bench, threads, reps = parse_args("python_bench.py")
    ag.set_num_threads(threads)
    if ag.num_threads() != threads:
        sys.exit(f"python_bench.py: asked for {threads} threads, the library uses {ag.num_threads()}")
    runners = {"B12": bench_b12}
    if bench not in runners:
        sys.exit(f"python_bench.py: no benchmark {bench} (this program runs {', '.join(runners)})")
    print(f"libautograd {ag.version()} from {ag.library_path()}; {ag.native_status()}", flush=True)
    runners[bench](threads, reps)


if __name__ == "__main__":
    main()
