"""JAX peer of the benchmark suite: B8, B2's training step as one jax.jit-compiled function.

    python3 bench/jax_bench.py BENCH THREADS REPS

Prints one "RESULT {json}" line per measured case. The step (64-32-1 MLP, batch 16, float64,
ReLU, MSE loss, SGD lr 0.01; data and initial parameters as bench_common.h) is ONE jitted
function: value_and_grad of the loss plus the SGD update, returning the new parameters (the old
ones' buffers donated) and the loss. Warm-up (which includes the compilation) as B2: 20 steps;
then every timed step waits for its results (block_until_ready). The exact work is defined in
bench/README.md.

Threads: XLA:CPU in jax 0.10 has no intra-op thread-count setting (XLA_FLAGS rejects unknown
flags, and `intra_op_parallelism_threads` is not one of its flags); at 1 thread this sets
`--xla_cpu_multi_thread_eigen=false` (single-threaded Eigen kernels) before jax is imported, at 2
threads it leaves XLA's defaults. What the process used is reported (`info.cpu_per_wall`)."""

import functools
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import now, parse_args, result, settle  # noqa: E402

PEER = "jax"


def configure_threads(threads):
    """Sets XLA's CPU threading before jax is imported; returns the XLA_FLAGS used."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_cpu_multi_thread_eigen")]
    if threads == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    return os.environ["XLA_FLAGS"]


def bench_b8(threads, reps, xla_flags):
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)

    def filled(shape, phase, scale):
        """The deterministic fill of bench_common.h, in float64: scale * sin(phase + 0.37 * i)."""
        n = math.prod(shape)
        return jnp.asarray((np.sin(np.arange(n, dtype=np.float64) * 0.37 + phase) * scale)
                           .reshape(shape), dtype=jnp.float64)

    x = filled((16, 64), 0.1, 1.0)
    y = filled((16, 1), 0.2, 1.0)
    params = (filled((32, 64), 0.3, 1 / math.sqrt(64)), filled((32,), 0.4, 1 / math.sqrt(64)),
              filled((1, 32), 0.5, 1 / math.sqrt(32)), filled((1,), 0.6, 1 / math.sqrt(32)))
    lr = 0.01

    def loss_fn(p, x, y):
        w1, b1, w2, b2 = p
        h = jnp.maximum(x @ w1.T + b1, 0.0)
        o = h @ w2.T + b2
        return jnp.mean((o - y) ** 2)

    # The parameters are donated: XLA may write the new ones into the old ones' buffers, as a
    # training loop would (the caller rebinds `params` to the result every step).
    @functools.partial(jax.jit, donate_argnums=0)
    def step(p, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        return tuple(w - lr * g for w, g in zip(p, grads)), loss

    warmup, steps = 20, 200
    t0 = now()
    first_loss = last_loss = 0.0
    for s in range(warmup):  # the first call compiles
        params, loss = step(params, x, y)
        jax.block_until_ready((params, loss))
        if s == 0:
            first_loss = float(loss)
            compile_s = now() - t0
        if s == warmup - 1:
            last_loss = float(loss)
    samples = []
    cpu0, wall0 = os.times(), now()
    for _ in range(reps):
        t0 = now()
        for _ in range(steps):
            params, loss = step(params, x, y)
            jax.block_until_ready((params, loss))
        samples.append((now() - t0) / steps * 1e6)
    cpu1, wall = os.times(), now() - wall0
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    result("B8", "mlp64", PEER, threads, "us_per_step", samples,
           {"first_loss": first_loss, "last_warmup_loss": last_loss, "steps_per_rep": steps,
            "first_call_s": compile_s, "cpu_per_wall": round(cpu / wall, 3),
            "xla_flags": xla_flags, "jax": jax.__version__, "device": str(jax.devices()[0])})


def main():
    bench, threads, reps = parse_args("jax_bench.py")
    xla_flags = configure_threads(threads)
    if bench != "B8":
        sys.exit(f"jax_bench.py: unknown benchmark {bench} (only B8)")
    import jax  # noqa: F401  (imported before settling, as torch is in torch_bench.py)
    settle()
    bench_b8(threads, reps, xla_flags)


if __name__ == "__main__":
    main()
