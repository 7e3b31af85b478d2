"""Before and after: Autograd built from an earlier commit against the working tree, in one run.

    python3 bench/compare.py REF [B1 B3 ...] [--rounds N]

Builds the library of commit REF (in a git worktree under bench/build/compare-REF) and of the
working tree (scripts/build.sh), then runs bench/build/autograd_bench, the same program, against
each library in turn (LD_LIBRARY_PATH picks the library), alternating every round so that a
noisy host slows both alike; it prints the medians and the fastest samples. Writes bench/results/compare.json, which report.py turns into the
"Before and after" table of RESULTS.md. Default: B1 and B3 at 1 and 2 threads, 7 rounds."""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
REPS = {"B1": 3, "B2": 3, "B3": 2, "B4": 2, "B5": 3}


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def short(ref, cwd=ROOT):
    return subprocess.run(["git", "-C", cwd, "rev-parse", "--short", ref], check=True,
                          capture_output=True, text=True).stdout.strip()


def build_base(ref):
    """The library of commit ref, built once in its own worktree."""
    tree = os.path.join(BUILD, "compare-" + short(ref))
    if not os.path.isdir(tree):
        run(["git", "-C", ROOT, "worktree", "add", "--detach", tree, ref])
    lib = os.path.join(tree, ".build", "release")
    if not os.path.exists(os.path.join(lib, "libautograd.so")):
        run(["bash", "scripts/build.sh"], cwd=tree, stdout=subprocess.DEVNULL)
    return lib


def samples(lib, bench, threads, reps):
    env = dict(os.environ, LD_LIBRARY_PATH=lib, OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), AG_NUM_THREADS=str(threads))
    out = subprocess.run([os.path.join(BUILD, "autograd_bench"), bench, str(threads), str(reps)],
                         env=env, check=True, capture_output=True, text=True).stdout
    results = [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
    if not results:
        sys.exit(f"compare.py: {bench} printed no result")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ref")
    ap.add_argument("benches", nargs="*", default=["B1", "B3"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "compare.json"))
    args = ap.parse_args()

    base = build_base(args.ref)
    run(["bash", "scripts/build.sh"], cwd=ROOT, stdout=subprocess.DEVNULL)
    new = os.path.join(ROOT, ".build", "release")
    os.makedirs(BUILD, exist_ok=True)
    run(["gcc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I", os.path.join(ROOT, "include"),
         os.path.join(HERE, "autograd_bench.c"), "-o", os.path.join(BUILD, "autograd_bench"),
         "-L", new, "-lautograd", "-lm", "-Wl,-rpath," + new])

    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    data = {"before": short(args.ref), "after": short("HEAD") + (" + uncommitted changes" if dirty else ""),
            "rounds": args.rounds, "results": []}
    for bench in [b.upper() for b in args.benches]:
        for threads in (1, 2):
            collected = {"before": {}, "after": {}}
            for r in range(args.rounds):
                for which, lib in (("before", base), ("after", new)) if r % 2 == 0 else (("after", new), ("before", base)):
                    for res in samples(lib, bench, threads, REPS.get(bench, 2)):
                        key = res["case"]
                        collected[which].setdefault(key, {"metric": res["metric"], "samples": []})
                        collected[which][key]["samples"] += res["samples"]
            for case, b in collected["before"].items():
                a = collected["after"][case]
                mb, ma = statistics.median(b["samples"]), statistics.median(a["samples"])
                row = {"bench": bench, "case": case, "threads": threads, "metric": b["metric"],
                       "before": mb, "after": ma, "change": ma / mb - 1,
                       "before_samples": b["samples"], "after_samples": a["samples"]}
                data["results"].append(row)
                fb, fa = min(b["samples"]), min(a["samples"])
                print(f"{bench} {case:<16} t={threads}  median before {mb:10.4g} after {ma:10.4g} ({100 * row['change']:+.1f}%)"
                      f"   fastest before {fb:10.4g} after {fa:10.4g} ({100 * (fa / fb - 1):+.1f}%)  {b['metric']}", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
    print("wrote", os.path.relpath(args.out, ROOT))


if __name__ == "__main__":
    main()
