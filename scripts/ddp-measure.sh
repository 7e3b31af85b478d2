#!/usr/bin/env bash
# Measures examples/ddp_digits.c at 1 and 2 ranks (README's "Data-parallel training" table):
# for two model sizes (the example's 64-128-10 MLP with a global batch of 64, and a larger
# 64-1024-10 MLP with a global batch of 512), runs each configuration REPS times (default 5) and
# prints the median and range of rank 0's step time, share of the step inside MPI calls, exposed
# wait after backward, and the share of the all-reduce time that lay inside backward.
# Not part of the test command (timings belong to a quiet machine); run it after
# `bash scripts/ddp-tests.sh`, which builds .build/ddp/ddp_digits. Usage: scripts/ddp-measure.sh [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
prog=.build/ddp/ddp_digits
if [[ ! -x $prog ]]; then
    echo "ddp-measure: $prog not found; run bash scripts/ddp-tests.sh first (it builds it)" >&2
    exit 1
fi
mpi=(mpirun --allow-run-as-root --oversubscribe)
out=.build/ddp/measure
rm -rf "$out"
mkdir -p "$out"

run() { # NAME NP ARGS...
    local name=$1 np=$2
    shift 2
    for ((r = 1; r <= reps; r++)); do
        if [[ $np == 1 ]]; then "$prog" "$@"; else "${mpi[@]}" -np "$np" "$prog" "$@"; fi >"$out/$name.$r.log"
    done
    echo "ddp-measure: $name done ($reps runs)" >&2
}

small=(--epochs 20)
large=(--hidden 1024 --batch 512 --epochs 40 --bucket-kib 256)
run small_np1 1 "${small[@]}"
run small_np2 2 "${small[@]}"
run small_np2_no_overlap 2 "${small[@]}" --no-overlap
run large_np1 1 "${large[@]}"
run large_np2 2 "${large[@]}"
run large_np2_no_overlap 2 "${large[@]}" --no-overlap

python3 - "$out" "$reps" <<'EOF'
import re, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
rows = [("small_np1", "64-128-10, batch 64, 1 rank"), ("small_np2", "64-128-10, batch 64, 2 ranks"),
        ("small_np2_no_overlap", "64-128-10, batch 64, 2 ranks, --no-overlap"),
        ("large_np1", "64-1024-10, batch 512, 1 rank"), ("large_np2", "64-1024-10, batch 512, 2 ranks"),
        ("large_np2_no_overlap", "64-1024-10, batch 512, 2 ranks, --no-overlap")]
def cell(values, fmt):
    m = statistics.median(values)
    return f"{fmt.format(m)} ({fmt.format(min(values))}-{fmt.format(max(values))})"
print(f"| configuration (median and range of {reps} runs) | step time, ms | time in MPI | exposed wait | all-reduce inside backward |")
print("|---|---|---|---|---|")
for name, label in rows:
    step, mpi, wait, inside = [], [], [], []
    for r in range(1, reps + 1):
        text = open(f"{out}/{name}.{r}.log").read()
        t = re.search(r"step ([0-9.]+) ms, .* = ([0-9.]+)% of the step, exposed wait [0-9.]+ ms = ([0-9.]+)%", text)
        o = re.search(r"overlap: ([0-9.]+)% of the all-reduce time", text)
        if not t or not o:
            sys.exit(f"ddp-measure: no timing lines in {out}/{name}.{r}.log")
        step.append(float(t.group(1))); mpi.append(float(t.group(2))); wait.append(float(t.group(3)))
        inside.append(float(o.group(1)))
    one = name.endswith("np1")
    print(f"| {label} | {cell(step, '{:.3f}')} | {cell(mpi, '{:.1f}')}% | {cell(wait, '{:.1f}')}% | "
          + ("(no communication) |" if one else f"{cell(inside, '{:.0f}')}% |"))
EOF
