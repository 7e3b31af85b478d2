"""Runs the benchmark programs and collects their results as JSON.

    python3 bench/driver.py [--quick] [--out FILE] [B1 ... B12]

For each benchmark, each thread count (1, 2) and each peer it starts the peer's program as
`prog BENCH THREADS REPS`, with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS set to
THREADS (and AG_NUM_THREADS, Autograd's own), and reads its "RESULT {json}" lines. B6 is run
in a fresh process per repetition. B12's Autograd program is python_bench.py (the Python package
over the library in .build/release), reported as the peer "autograd" like autograd_bench.
micrograd is single-threaded and runs once (as threads = 1). Progress is printed as results
arrive; afterwards the agreement checks (B1, B7 and B12 gradients and the values of B2, B3, B6,
B8, B9, B10, B11) run.

Exit status: 0 when every peer ran (a missed target is not a failure), 1 when a peer crashed,
exited non-zero or printed no result (the JSON is still written, with the failure recorded).
The results a failing program printed before it failed are kept: B7-B11's Autograd program
measures its eager case even when the replay cannot run, and then exits 1."""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
PY = sys.executable

# How each peer's program is started.
PEERS = {
    "autograd": [os.path.join(BUILD, "autograd_bench")],
    "cblas": [os.path.join(BUILD, "cblas_bench")],
    "libtorch": [os.path.join(BUILD, "libtorch_bench")],
    "torch": [PY, os.path.join(HERE, "torch_bench.py")],
    "micrograd": [PY, os.path.join(HERE, "micrograd_bench.py")],
    "jax": [PY, os.path.join(HERE, "jax_bench.py")],
}
SINGLE_THREADED = {"micrograd"}
# A benchmark whose peer runs another program than PEERS names: B12 is Autograd driven from
# Python (the installed libautograd package), still reported as the peer "autograd".
BENCH_PROGRAMS = {("B12", "autograd"): [PY, os.path.join(HERE, "python_bench.py")]}

# The peers of each benchmark, Autograd first.
BENCH_PEERS = {
    "B1": ["autograd", "libtorch", "torch", "micrograd"],
    "B2": ["autograd", "libtorch", "torch"],
    "B3": ["autograd", "libtorch", "torch"],
    "B4": ["autograd", "cblas", "torch"],
    "B5": ["autograd", "torch"],
    "B6": ["autograd", "torch"],
    "B7": ["autograd", "torch"],  # torch: B1's chain again, the reference for the gradients
    "B8": ["autograd", "jax"],
    "B9": ["autograd"],  # replay against eager, both in the Autograd process
    "B10": ["autograd", "torch"],  # Autograd: eager and replay in one process
    "B11": ["autograd", "torch"],
    "B12": ["autograd", "torch"],  # Autograd from Python; torch: B1's chain again, measured beside it
}
THREADS = [1, 2]

# Repetitions per benchmark (each result is the median over them); B6 counts processes.
REPS_FULL = {"B1": 9, "B2": 7, "B3": 5, "B4": 5, "B5": 7, "B6": 5, "B7": 9, "B8": 7, "B9": 15,
             "B10": 9, "B11": 9, "B12": 9}
REPS_QUICK = {"B1": 3, "B2": 3, "B3": 3, "B4": 3, "B5": 3, "B6": 1, "B7": 3, "B8": 3, "B9": 3,
              "B10": 3, "B11": 3, "B12": 3}

PEER_TIMEOUT_S = 600

# Quiet-machine guard. Other processes' CPU use is measured during every peer run and stored
# with its results (`other_cpu_cores`). Before each run the driver waits until other processes
# have used less than QUIET_CORES cores for QUIET_FOR_S seconds (at most QUIET_WAIT_S per run,
# QUIET_BUDGET_S in all), and a run that was disturbed anyway is run once more (at most
# MAX_RERUNS times in all), keeping the less disturbed of the two.
QUIET_CORES = 0.25
QUIET_FOR_S = 2.0
QUIET_WAIT_S = 60
QUIET_BUDGET_S = 180
MAX_RERUNS = 8
_budget = {"wait_s": QUIET_BUDGET_S, "reruns": MAX_RERUNS}


def busy_cpu_seconds():
    """CPU seconds spent busy by the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    t = os.times()
    return t.children_user + t.children_system


def wait_for_quiet():
    """Waits until the machine has been quiet for QUIET_FOR_S (half-second samples)."""
    waited = quiet = 0.0
    while quiet < QUIET_FOR_S:
        if _budget["wait_s"] <= 0 or waited >= QUIET_WAIT_S:
            print(f"  WARNING: still busy after {waited:.0f} s of waiting; measuring anyway",
                  flush=True)
            return
        b0 = busy_cpu_seconds()
        time.sleep(0.5)
        cores = (busy_cpu_seconds() - b0) / 0.5
        if cores < QUIET_CORES:
            quiet += 0.5
            continue
        if waited == 0:
            print(f"  waiting for a quiet machine: other processes use {cores:.2f} cores", flush=True)
        quiet = 0.0
        waited += 0.5
        _budget["wait_s"] -= 0.5


def run_once(cmd, env, tag):
    """Runs a program; returns (exit status, RESULT lines, other processes' cores, the last
    line it printed that was not a result). Its stderr is read with its stdout."""
    results, last_message = [], ""
    busy0, child0, wall0 = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)
    timer = threading.Timer(PEER_TIMEOUT_S, proc.kill)  # a hung peer is killed
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                results.append(json.loads(line[len("RESULT "):]))
            else:
                print(f"  [{tag}] {line.rstrip()}", flush=True)
                if line.strip():
                    last_message = line.strip()
        rc = proc.wait()
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
    if timed_out:
        rc = f"killed after the {PEER_TIMEOUT_S} s timeout"
    wall = max(time.monotonic() - wall0, 1e-9)
    other = max(0.0, (busy_cpu_seconds() - busy0) - (children_cpu_seconds() - child0)) / wall
    for r in results:
        r["other_cpu_cores"] = round(other, 3)
    return rc, results, other, last_message


def note_failure(failures, failure):
    """Records a failed run once: the same failure again (a later round) only counts a run."""
    for f in failures:
        if all(f[k] == failure[k] for k in ("bench", "peer", "threads", "error")):
            f["runs"] += 1
            return
    failures.append(dict(failure, runs=1))


def run_peer(bench, peer, threads, reps, failures, quiet_wait=True):
    """Runs one peer program; returns (its parsed RESULT lines, whether it failed). A program
    that fails after printing results keeps them (the cases it measured before failing)."""
    cmd = BENCH_PROGRAMS.get((bench, peer), PEERS[peer]) + [bench, str(threads), str(reps)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "AG_NUM_THREADS"):
        env[var] = str(threads)
    # The Python package loads the library autograd_bench links (.build/release), unless told.
    env.setdefault("AUTOGRAD_LIBRARY", os.path.join(ROOT, ".build", "release"))
    best, best_other = None, None
    for attempt in range(2):
        if quiet_wait:
            wait_for_quiet()
        try:
            rc, results, other, message = run_once(cmd, env, peer)
        except OSError as e:
            rc, results, other, message = f"cannot start: {e}", [], 0.0, ""
        if rc != 0 or not results:
            why = ("no RESULT line" if rc == 0 else rc if isinstance(rc, str)
                   else f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}")
            if message:
                why += f" (last message: {message})"
            kept = ", ".join(r["case"] for r in results)
            note_failure(failures, {"bench": bench, "peer": peer, "threads": threads, "error": why,
                                    "command": " ".join(cmd), "kept": kept})
            print(f"  FAILED {bench} {peer} t={threads}: {why} ({' '.join(cmd)})"
                  + (f"; keeping the results it printed before: {kept}" if kept else ""), flush=True)
            return results, True
        if best is None or other < best_other:
            best, best_other = results, other
        if other < QUIET_CORES:
            return best, False
        print(f"  WARNING: other processes used {other:.2f} cores during this run", flush=True)
        if not quiet_wait or _budget["reruns"] <= 0 or attempt == 1:
            break  # no reruns left, or this was the rerun
        _budget["reruns"] -= 1
        print("  running it again", flush=True)
    return best, False


def fmt(x):
    return f"{x:.4g}"


def record(store, r):
    """Adds the median to a result, stores it and prints a progress line."""
    r["median"] = statistics.median(r["samples"])
    store.append(r)
    spread = " ".join(fmt(s) for s in r["samples"])
    print(f"  {r['bench']} {r['case']:<16} {r['peer']:<9} t={r['threads']}  "
          f"median {fmt(r['median']):>9} {r['metric']:<12} [{spread}]", flush=True)


# Peers run in alternation: each round runs every peer once with a share of the repetitions,
# so a machine whose speed drifts over minutes (shared hosts do) slows every peer alike and
# the ratios stay fair. B6 runs one repetition per fresh process, so its rounds are its reps.
ROUNDS = 3


def run_benchmark(bench, reps, store, failures, quiet_wait):
    for threads in THREADS:
        peers = [p for p in BENCH_PEERS[bench] if not (p in SINGLE_THREADED and threads != THREADS[0])]
        rounds = reps if bench == "B6" else min(ROUNDS, reps)
        per_round = 1 if bench == "B6" else -(-reps // rounds)
        print(f"{bench} threads={threads}: {', '.join(peers)} alternating, {rounds} rounds of "
              f"{per_round} repetition(s)", flush=True)
        merged = {peer: {} for peer in peers}
        broken = set()
        for k in range(rounds):
            for peer in peers:
                if peer in broken:
                    continue
                out, _failed = run_peer(bench, peer, threads, per_round, failures, quiet_wait)
                if not out:  # nothing measured: no more rounds for this peer, nothing reported
                    broken.add(peer)
                    merged[peer] = {}
                    continue
                # A run that failed after some results keeps them, and the peer runs again in
                # the next rounds (its other cases still get every round's samples).
                for r in out:
                    m = merged[peer].setdefault(r["case"], dict(r, samples=[], infos=[], other_cpu_cores=0))
                    m["samples"] += r["samples"]
                    m["infos"].append(r.get("info"))
                    m["other_cpu_cores"] = max(m["other_cpu_cores"], r["other_cpu_cores"])
        for peer in peers:
            for m in merged[peer].values():
                m["info"] = m.pop("infos")[-1] or {}
                record(store, m)


def find(store, bench, case, peer, threads):
    for r in store:
        if (r["bench"], r["case"], r["peer"], r["threads"]) == (bench, case, peer, threads):
            return r
    return None


def close(a, b, rtol):
    return abs(a - b) <= rtol * max(abs(a), abs(b)) or a == b


# B7-B11 (capture and replay): (bench, quantity, rtol, reference (peer, case), the checked
# (peer, case, whether a disagreement marks that result INVALID)). A replay that does not
# compute what its reference does is not a valid measurement; an eager case only warns, except
# in B10 and B11, whose targets compare Autograd's eager step with PyTorch's directly: there a
# step that computes something else than PyTorch's is no measurement of the same step either.
REPLAY_CHECKS = [
    ("B7", "grads", 1e-9, ("torch", "chain10k"),
     [("autograd", "chain10k_replay", True), ("autograd", "chain10k_eager", False)]),
    ("B7", "value", 1e-9, ("torch", "chain10k"), [("autograd", "chain10k_eager", False)]),
    ("B8", "first_loss", 1e-9, ("jax", "mlp64"),
     [("autograd", "mlp64_replay", True), ("autograd", "mlp64_eager", False)]),
    ("B8", "last_warmup_loss", 1e-9, ("jax", "mlp64"),
     [("autograd", "mlp64_replay", True), ("autograd", "mlp64_eager", False)]),
    ("B9", "first_loss", 1e-4, ("autograd", "mlp784_eager"), [("autograd", "mlp784_replay", True)]),
    ("B9", "last_warmup_loss", 1e-4, ("autograd", "mlp784_eager"),
     [("autograd", "mlp784_replay", True)]),
    # B10, B11: each Autograd case against PyTorch's step, and the replay against the eager case
    # (its first loss is the capture's own run; its last warm-up loss comes from a replay).
    ("B10", "first_loss", 1e-4, ("torch", "transformer"),
     [("autograd", "transformer_eager", True), ("autograd", "transformer_replay", True)]),
    ("B10", "last_warmup_loss", 1e-4, ("torch", "transformer"),
     [("autograd", "transformer_eager", True), ("autograd", "transformer_replay", True)]),
    ("B10", "last_warmup_loss", 1e-4, ("autograd", "transformer_eager"),
     [("autograd", "transformer_replay", True)]),
    ("B11", "first_loss", 1e-4, ("torch", "cnn"),
     [("autograd", "cnn_eager", True), ("autograd", "cnn_replay", True)]),
    ("B11", "last_warmup_loss", 1e-4, ("torch", "cnn"),
     [("autograd", "cnn_eager", True), ("autograd", "cnn_replay", True)]),
    ("B11", "last_warmup_loss", 1e-4, ("autograd", "cnn_eager"), [("autograd", "cnn_replay", True)]),
]


def check_agreement(store):
    """Compares what the peers computed (B1 and B12 gradients and value, B2/B3 first loss, B6
    value) with PyTorch's, and B7-B11's results with their references (REPLAY_CHECKS). Only B1's
    and B12's checks on Autograd and the checks of REPLAY_CHECKS that say so mark a result
    invalid; the others warn."""
    specs = [("B1", "chain10k", "grads", 1e-9), ("B1", "chain10k", "value", 1e-9),
             ("B2", "mlp64", "first_loss", 1e-9), ("B3", "mlp784", "first_loss", 1e-4),
             ("B6", "backward_s", "value", 1e-9),
             ("B12", "chain10k", "grads", 1e-9), ("B12", "chain10k", "value", 1e-9)]
    groups = [(bench, key, rtol, ("torch", case),
               [(peer, case, bench in ("B1", "B12") and peer == "autograd")
                for peer in BENCH_PEERS[bench] if peer != "torch"])
              for bench, case, key, rtol in specs]
    checks = []
    for bench, key, rtol, (ref_peer, ref_case), checked in groups + REPLAY_CHECKS:
        for threads in THREADS:
            ref = find(store, bench, ref_case, ref_peer,
                       THREADS[0] if ref_peer in SINGLE_THREADED else threads)
            for peer, case, invalidates in checked:
                r = find(store, bench, case, peer, THREADS[0] if peer in SINGLE_THREADED else threads)
                if r is None or ref is None or key not in r["info"] or key not in ref["info"]:
                    continue
                mine, theirs = r["info"][key], ref["info"][key]
                mine = mine if isinstance(mine, list) else [mine]
                theirs = theirs if isinstance(theirs, list) else [theirs]
                ok = len(mine) == len(theirs) and all(close(a, b, rtol) for a, b in zip(mine, theirs))
                reference = ref_peer if ref_case == case else f"{ref_peer} {ref_case}"
                checks.append({"bench": bench, "what": key, "peer": peer, "case": case,
                               "threads": threads, "reference": reference, "rtol": rtol, "ok": ok,
                               "values": mine, "reference_values": theirs})
                if not ok:
                    print(f"WARNING: {bench} {key} of {peer} {case} (threads {threads}) disagrees "
                          f"with {reference}'s beyond rtol {rtol}: {mine} vs {theirs}", flush=True)
                    if invalidates:
                        r["valid"] = False
                        print(f"WARNING: the {peer} {bench} {case} result at "
                              f"{threads} thread(s) is marked invalid", flush=True)
    return checks


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def source_commit():
    """The checked-out commit the library was built from, noting uncommitted changes."""
    commit = first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return commit + (" + uncommitted changes" if dirty else "")


def machine_and_versions():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])

    def pkg(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    openblas = "unknown"
    for deb in ("libopenblas0-pthread", "libopenblas0", "libopenblas-dev"):
        v = first_line(["dpkg-query", "-W", "-f", "${Version}", deb])
        if v != "unknown" and "no packages" not in v.lower():
            openblas = f"{deb} {v}"
            break
    return {
        "machine": {"cpu": model.group(1).strip() if model else platform.processor(),
                    "cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 ** 2, 1),
                    "kernel": platform.release()},
        "versions": {"torch": pkg("torch"), "numpy": pkg("numpy"), "micrograd": pkg("micrograd"),
                     "jax": pkg("jax"), "jaxlib": pkg("jaxlib"),
                     "matplotlib": pkg("matplotlib"), "python": platform.python_version(),
                     "gcc": first_line(["gcc", "--version"]),
                     "swift": first_line(["swift", "--version"]), "openblas": openblas,
                     "autograd_commit": source_commit()},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (development only)")
    ap.add_argument("--no-wait", action="store_true",
                    help="do not wait for other processes to go quiet before each run")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("benchmarks", nargs="*", metavar="BENCH", help="B1..B12 (default: all)")
    args = ap.parse_args()
    benches = [b.upper() for b in args.benchmarks] or list(BENCH_PEERS)
    unknown = [b for b in benches if b not in BENCH_PEERS]
    if unknown:
        sys.exit(f"driver: unknown benchmark(s) {unknown}; choose from {list(BENCH_PEERS)}")
    reps_table = REPS_QUICK if args.quick else REPS_FULL

    started = datetime.datetime.now().astimezone()
    meta = {"date": started.isoformat(timespec="seconds"),
            "command": "bash bench/run.sh" + (" --quick" if args.quick else "")
                       + "".join(" " + b for b in args.benchmarks),
            "quick": args.quick, "benchmarks": benches, "threads": THREADS,
            "repetitions": {b: reps_table[b] for b in benches}}
    meta.update(machine_and_versions())

    store, failures = [], []
    for bench in benches:
        run_benchmark(bench, reps_table[bench], store, failures, not args.no_wait)
    checks = check_agreement(store)
    meta["seconds"] = round((datetime.datetime.now().astimezone() - started).total_seconds(), 1)
    meta["quiet_cores_limit"] = QUIET_CORES

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "results": store, "checks": checks, "failures": failures}, f,
                  indent=1)
    shutil.move(tmp, args.out)
    print(f"driver: {len(store)} results in {meta['seconds']} s -> {os.path.relpath(args.out, ROOT)}")
    if failures:
        print(f"driver: {len(failures)} peer run(s) FAILED:", file=sys.stderr)
        for f in failures:
            print(f"  {f['bench']} {f['peer']} threads={f['threads']}: {f['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
