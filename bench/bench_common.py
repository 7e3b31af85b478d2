"""Helpers shared by the Python benchmark peers (torch_bench.py, micrograd_bench.py): the clock,
argument parsing, /proc memory readings and the "RESULT {json}" line the driver parses.

They mirror bench_common.h, so every peer reports in the same format."""

import json
import sys
import time

now = time.perf_counter


def settle():
    """Waits half a second, untimed, before measuring: the same pause bench_settle() gives the C
    peers (there it lets OpenBLAS's idle threads stop spinning after start-up)."""
    time.sleep(0.5)


def parse_args(prog):
    """Parses `prog BENCH THREADS REPS`; exits with status 2 on anything else."""
    try:
        bench, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        if len(sys.argv) != 4 or threads < 1 or reps < 1:
            raise ValueError
    except (IndexError, ValueError):
        sys.exit(f"usage: {prog} BENCH THREADS REPS   (BENCH e.g. B1, THREADS >= 1, REPS >= 1)")
    return bench, threads, reps


def result(bench, case, peer, threads, metric, samples, info=None):
    """Prints one result line; the driver computes the median itself."""
    line = {"bench": bench, "case": case, "peer": peer, "threads": threads, "metric": metric,
            "samples": [float(s) for s in samples], "info": info or {}}
    print("RESULT " + json.dumps(line), flush=True)


def proc_status_mib(field):
    """A kB field of /proc/self/status ("VmRSS", "VmHWM") in MiB, or -1."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


CHAIN_LEAVES = [0.5, -0.3, 0.8, 1.2]


_MASK64 = (1 << 64) - 1


def splitmix64(seed, n):
    """The first n outputs of SplitMix64 seeded with seed, as bench_common.h's bench_splitmix64
    (B10's tokens and B11's labels)."""
    out, state = [], seed
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out
