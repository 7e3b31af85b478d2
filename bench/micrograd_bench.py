"""micrograd peer, B1 only (informative: no target).

    python3 bench/micrograd_bench.py B1 1 REPS

micrograd has no tanh, so one is added here as a function building a Value whose backward is
(1 - t^2) * out.grad. micrograd's backward sorts the graph recursively, so the benchmark runs in
a thread with a 512 MiB stack and a raised recursion limit. micrograd's nodes reference
themselves through their backward closures, so the graph is released by the cycle collector:
gc.collect() runs inside the timed region, as the other peers' release does."""

import gc
import math
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from micrograd.engine import Value  # noqa: E402

from bench_common import CHAIN_LEAVES, now, parse_args, result, settle  # noqa: E402

PEER = "micrograd"


def tanh(v):
    """tanh for micrograd Values: out = tanh(v), d out / d v = 1 - out^2."""
    t = math.tanh(v.data)
    out = Value(t, (v,), "tanh")

    def _backward():
        v.grad += (1.0 - t * t) * out.grad
    out._backward = _backward
    return out


def bench_b1(threads, reps, report):
    cycles, ops = 2500, 10000
    x = [Value(v) for v in CHAIN_LEAVES]
    samples, value, grads = [], 0.0, []
    for r in range(-1, reps):  # r = -1: untimed warm-up
        t0 = now()
        v = x[0]
        for i in range(cycles):
            v = v + x[i % 4]
            v = v * x[(i + 1) % 4]
            v = tanh(v)
            v = v.relu()
        v.backward()
        if r < 0:
            value = v.data
        del v
        gc.collect()  # release the graph (self-referencing closures need the cycle collector)
        t1 = now()
        if r >= 0:
            samples.append((t1 - t0) / ops * 1e6)
        grads = [float(xi.grad) for xi in x]
        for xi in x:
            xi.grad = 0
    report.append(("B1", "chain10k", PEER, threads, "us_per_op", samples,
                   {"value": value, "grads": grads}))


def main():
    bench, threads, reps = parse_args("micrograd_bench.py")
    if bench != "B1":
        sys.exit(f"micrograd_bench.py: only B1 is defined for this peer, not {bench}")
    sys.setrecursionlimit(1_000_000)
    settle()
    threading.stack_size(512 * 1024 * 1024)
    report, errors = [], []

    def run():
        try:
            bench_b1(threads, reps, report)
        except BaseException as e:  # surfaced below so the process exits non-zero
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors or not report:
        sys.exit(f"micrograd_bench.py: B1 failed: {errors[0] if errors else 'no result'!r}")
    result(*report[0])


if __name__ == "__main__":
    main()
