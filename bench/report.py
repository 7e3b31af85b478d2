"""Turns the driver's JSON into the ratio table (printed), a Markdown report and a PNG chart.

    python3 bench/report.py [--json FILE] [--md FILE] [--png FILE]

Every ratio is Autograd / peer, computed from medians measured in the same run: for times
(B1, B2, B3, B6) lower is better and a target reads "<= limit"; for throughputs (B4 GFLOP/s,
B5 GB/s) higher is better and a target reads ">= limit". The hand-written bench/HISTORY.md is
copied into the report verbatim, so notes kept there are never overwritten."""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Targets: (benchmark, Autograd's case, peer, peer's case, comparison, limit). Each is judged
# at every thread count the run used.
TARGETS = [
    ("B1", "chain10k", "libtorch", "chain10k", "<=", 0.2),
    ("B1", "chain10k", "torch", "chain10k", "<=", 0.05),
    ("B2", "mlp64", "libtorch", "mlp64", "<=", 0.5),
    ("B3", "mlp784", "torch", "mlp784", "<=", 1.0),
    ("B4", "f32_1024", "cblas", "f32_1024", ">=", 0.95),
    ("B4", "f32_2048", "cblas", "f32_2048", ">=", 0.95),
    ("B4", "f64_1024", "cblas", "f64_1024", ">=", 0.95),
    ("B4", "f64_2048", "cblas", "f64_2048", ">=", 0.95),
    ("B5", "add", "torch", "add_out", ">=", 1.0),
    ("B5", "mul", "torch", "mul_out", ">=", 1.0),
    ("B5", "exp", "torch", "exp_out", ">=", 1.0),
    ("B5", "sum_mul_fwd_bwd", "torch", "sum_mul_fwd_bwd", ">=", 1.0),
    ("B6", "backward_s", "torch", "backward_s", "<=", 0.25),
    ("B6", "mem_mib", "torch", "mem_mib", "<=", 0.25),
]

# Ratios shown for information only (no target).
INFORMATIVE = [
    ("B1", "chain10k", "micrograd", "chain10k"),
    ("B2", "mlp64", "torch", "mlp64"),
    ("B3", "mlp784", "libtorch", "mlp784"),
    ("B4", "f32_1024", "torch", "f32_1024"),
    ("B4", "f32_2048", "torch", "f32_2048"),
    ("B4", "f64_1024", "torch", "f64_1024"),
    ("B4", "f64_2048", "torch", "f64_2048"),
    ("B5", "add", "torch", "add"),
    ("B5", "mul", "torch", "mul"),
    ("B5", "exp", "torch", "exp"),
    ("B6", "forward_s", "torch", "forward_s"),
]

SINGLE_THREADED = {"micrograd"}
UNITS = {"us_per_op": "µs/op", "us_per_step": "µs/step", "ms_per_step": "ms/step",
         "gflops": "GFLOP/s", "gbps": "GB/s", "s": "s", "MiB": "MiB"}


def load(path):
    import json
    with open(path) as f:
        return json.load(f)


class Results:
    def __init__(self, data):
        self.data = data
        self.threads = data["meta"].get("threads", [1, 2])
        self.index = {(r["bench"], r["case"], r["peer"], r["threads"]): r for r in data["results"]}

    def get(self, bench, case, peer, threads):
        if peer in SINGLE_THREADED:
            threads = self.threads[0]
        return self.index.get((bench, case, peer, threads))

    def ratio(self, bench, a_case, peer, p_case, threads):
        """(ratio, autograd result, peer result); ratio None when either is missing."""
        a = self.get(bench, a_case, "autograd", threads)
        p = self.get(bench, p_case, peer, threads)
        if a is None or p is None or p["median"] <= 0:
            return None, a, p
        return a["median"] / p["median"], a, p


def disturbed(res, *results):
    """Whether other processes were busy (>= the driver's limit) while any of these ran."""
    limit = res.data["meta"].get("quiet_cores_limit", 0.25)
    return any(r is not None and r.get("other_cpu_cores", 0) >= limit for r in results)


def evaluate(res):
    """One row per (target, threads): label, threads, ratio, target text, status."""
    rows = []
    for bench, a_case, peer, p_case, op, limit in TARGETS:
        for t in res.threads:
            ratio, a, p = res.ratio(bench, a_case, peer, p_case, t)
            if a is None and p is None:
                continue  # benchmark not run
            if ratio is None:
                status = "NO DATA"
            elif a.get("valid") is False:
                status = "INVALID"
            elif (ratio <= limit) if op == "<=" else (ratio >= limit):
                status = "PASS"
            else:
                status = "MISS"
            what = a_case if a_case == p_case else f"{a_case} vs {p_case}"
            rows.append({"bench": bench, "label": f"{bench} {what} / {peer}", "threads": t,
                         "ratio": ratio, "target": f"{op} {limit:g}", "op": op, "limit": limit,
                         "status": status, "disturbed": disturbed(res, a, p)})
    return rows


def informative(res):
    rows = []
    for bench, a_case, peer, p_case in INFORMATIVE:
        for t in res.threads:
            ratio, a, p = res.ratio(bench, a_case, peer, p_case, t)
            if ratio is not None:
                what = a_case if a_case == p_case else f"{a_case} vs {p_case}"
                rows.append({"label": f"{bench} {what} / {peer}", "threads": t, "ratio": ratio})
    return rows


def fmt_ratio(r):
    return "n/a" if r is None else (f"{r:.3g}" if r < 100 else f"{r:.0f}")


def print_table(rows):
    width = max([len(r["label"]) for r in rows] + [10])
    print(f"\n{'target':<{width}}  thr  {'ratio':>8}  {'target':>7}  result")
    print("-" * (width + 34))
    for r in rows:
        print(f"{r['label']:<{width}}  {r['threads']:>3}  {fmt_ratio(r['ratio']):>8}  "
              f"{r['target']:>7}  {r['status']}"
              + ("  (disturbed: other processes were busy)" if r["disturbed"] else ""))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "MISS", "INVALID", "NO DATA")}
    print("-" * (width + 34))
    print("  ".join(f"{k}: {v}" for k, v in counts.items() if v or k in ("PASS", "MISS")))


def draw_chart(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["label"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    width = 0.8 / max(len(threads), 1)
    colours = {"PASS": "#2e9d4a", "MISS": "#d1443b", "INVALID": "#999999", "NO DATA": "#dddddd"}
    fig, ax = plt.subplots(figsize=(max(9, 0.8 * len(labels) + 4), 6.5))
    for i, label in enumerate(labels):
        group = [r for r in rows if r["label"] == label]
        for r in group:
            j = threads.index(r["threads"])
            x = i - 0.4 + width * (j + 0.5)
            if r["ratio"] is not None and r["ratio"] > 0:
                ax.bar(x, r["ratio"], width * 0.9, color=colours[r["status"]],
                       hatch="//" if j else None, edgecolor="black", linewidth=0.4)
                ax.text(x, r["ratio"], fmt_ratio(r["ratio"]) + ("†" if r["disturbed"] else ""),
                        ha="center", va="bottom", fontsize=6)
        limit = group[0]["limit"]
        ax.hlines(limit, i - 0.45, i + 0.45, colors="black", linewidth=2.5, zorder=3)
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    targets = [next(r["target"] for r in rows if r["label"] == label) for label in labels]
    ax.set_xticklabels([f"{label}\n(target {t})" for label, t in zip(labels, targets)],
                       rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ratio Autograd / peer (log scale)")
    ax.set_title(title, fontsize=9)
    from matplotlib.patches import Patch
    legend = [Patch(facecolor=colours[s], label=s) for s in ("PASS", "MISS", "INVALID")]
    legend += [Patch(facecolor="white", edgecolor="black", hatch="//" if j else None,
                     label=f"{t} thread{'s' if t > 1 else ''}") for j, t in enumerate(threads)]
    legend.append(Patch(facecolor="black", label="target (black line)"))
    legend.append(Patch(facecolor="white", edgecolor="white",
                        label="† other processes were busy"))
    ax.legend(handles=legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def raw_table(res):
    """Medians per benchmark, case and peer, one column per thread count."""
    order = {"autograd": 0, "cblas": 1, "libtorch": 2, "torch": 3, "micrograd": 4}
    keys = sorted({(r["bench"], r["case"], r["peer"]) for r in res.data["results"]},
                  key=lambda k: (k[0], k[1], order.get(k[2], 9), k[2]))
    head = "| Bench | Case | Unit | Peer | " + " | ".join(
        f"{t} thread{'s' if t > 1 else ''}" for t in res.threads) + " | Repetitions |"
    lines = [head, "|" + "---|" * (5 + len(res.threads))]
    for bench, case, peer in keys:
        cells, unit, n = [], "", 0
        for t in res.threads:
            r = res.index.get((bench, case, peer, t))
            if r is None:
                cells.append("—" if peer not in SINGLE_THREADED else "(single-threaded)")
                continue
            unit, n = UNITS.get(r["metric"], r["metric"]), len(r["samples"])
            cells.append(f"{r['median']:.4g}" + (" (invalid)" if r.get("valid") is False else "")
                         + (" †" if disturbed(res, r) else ""))
        lines.append(f"| {bench} | {case} | {unit} | {peer} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def compare_table(comp):
    """The "Before and after" section from bench/compare.py's JSON (None: no section)."""
    if not comp:
        return []
    out = ["## Before and after", "",
           f"Autograd built from commit {comp['before']} (before) and {comp['after']} (after), the same "
           f"benchmark program run against each library in turn, alternating, {comp['rounds']} rounds "
           "(`python3 bench/compare.py`). Medians of all samples, and the fastest sample: on a host whose "
           "speed swings between two levels every few minutes the median depends on how many samples fell "
           "in slow stretches, while the fastest of each is measured in the same fast stretch. Lower is "
           "better.", "",
           "| Benchmark | Threads | Before (median) | After (median) | Change | Before (fastest) | After (fastest) | Change | Unit |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in comp["results"]:
        bmin, amin = min(r["before_samples"]), min(r["after_samples"])
        out.append(f"| {r['bench']} {r['case']} | {r['threads']} | {r['before']:.4g} | {r['after']:.4g} | "
                   f"{100 * r['change']:+.1f}% | {bmin:.4g} | {amin:.4g} | {100 * (amin / bmin - 1):+.1f}% | "
                   f"{r['metric']} |")
    return out + [""]


def markdown(data, res, rows, info_rows, png_name, history, comp=None):
    meta = data["meta"]
    m, v = meta["machine"], meta["versions"]
    limit = meta.get("quiet_cores_limit", 0.25)
    busy = [r for r in data["results"] if r.get("other_cpu_cores", 0) >= limit]
    out = ["# Autograd benchmark results", "",
           "<!-- Generated by bench/report.py from the JSON of bench/run.sh; edit bench/HISTORY.md "
           "for notes, not this file. -->", ""]
    if meta.get("quick") or len(meta.get("benchmarks", [])) < 6:
        out += ["> **Partial or quick run** (fewer repetitions or not every benchmark): for "
                "development only, not for comparison.", ""]
    out += [f"- **Date:** {meta['date']} (the run took {meta.get('seconds', '?')} s)",
            f"- **Command:** `{meta['command']}`",
            f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB memory, "
            f"Linux {m['kernel']}",
            f"- **Versions:** Autograd built from commit {v['autograd_commit']}; torch {v['torch']}; "
            f"numpy {v['numpy']}; micrograd {v['micrograd']}; matplotlib {v['matplotlib']}; "
            f"Python {v['python']}; {v['gcc']}; {v['swift']}; OpenBLAS {v['openblas']}",
            "- **Other work on the machine:** " + (
                "none measured (other processes used < "
                f"{limit:g} cores during every peer run)" if not busy else
                f"**{len(busy)} of {len(data['results'])} results were measured while other "
                f"processes used >= {limit:g} cores** (marked † below; up to "
                f"{max(r['other_cpu_cores'] for r in busy):.2f} cores): those timings are "
                "disturbed, 2-thread ones most"),
            f"- **Repetitions:** " + ", ".join(f"{b}: {n}" for b, n in meta["repetitions"].items())
            + " (every number is the median over them; B6 counts fresh processes)",
            f"- **Threads:** {', '.join(map(str, res.threads))} (micrograd is single-threaded and "
            "runs once)", ""]
    if data.get("failures"):
        out += ["**Peer runs that FAILED:**", ""]
        out += [f"- {f['bench']} {f['peer']} threads={f['threads']}: {f['error']}"
                for f in data["failures"]]
        out.append("")

    out += ["## Targets", "",
            "Ratio = Autograd / peer, from medians of the same run. Times (B1, B2, B3, B6): "
            "lower is better, target `<=`. Throughputs (B4, B5): higher is better, target `>=`.",
            "", "| Target | Threads | Ratio | Target | Result |", "|---|---|---|---|---|"]
    out += [f"| {r['label']} | {r['threads']} | {fmt_ratio(r['ratio'])} | {r['target']} | "
            f"**{r['status']}**{' †' if r['disturbed'] else ''} |" for r in rows]
    npass = sum(r["status"] == "PASS" for r in rows)
    out += ["", f"{npass} of {len(rows)} PASS.", "", f"![Ratios Autograd / peer]({png_name})", ""]

    if info_rows:
        out += ["## Other ratios (informative, no target)", "",
                "| Ratio | Threads | Autograd / peer |", "|---|---|---|"]
        out += [f"| {r['label']} | {r['threads']} | {fmt_ratio(r['ratio'])} |" for r in info_rows]
        out.append("")

    out += compare_table(comp)
    out += ["## Raw numbers (medians)", "", raw_table(res), ""]

    checks = data.get("checks", [])
    if checks:
        out += ["## Agreement checks", "",
                "What each peer computed, compared with PyTorch (B1's four leaf gradients and "
                "final value, B2/B3's first loss, B6's final value). A failed B1 check on "
                "Autograd marks its B1 result INVALID.", "",
                "| Bench | Quantity | Peer | Threads | rtol | Agrees |", "|---|---|---|---|---|---|"]
        out += [f"| {c['bench']} | {c['what']} | {c['peer']} | {c['threads']} | {c['rtol']:g} | "
                f"{'yes' if c['ok'] else '**NO**'} |" for c in checks]
        out.append("")

    out += [history.rstrip(), ""]  # bench/HISTORY.md, verbatim
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--md", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--png", default=os.path.join(HERE, "ratios.png"))
    ap.add_argument("--history", default=os.path.join(HERE, "HISTORY.md"))
    ap.add_argument("--compare", default=os.path.join(HERE, "results", "compare.json"),
                    help="bench/compare.py's JSON, shown as 'Before and after' when it exists")
    args = ap.parse_args()

    data = load(args.json)
    res = Results(data)
    rows = evaluate(res)
    info_rows = informative(res)
    print_table(rows)
    if info_rows:
        print("\ninformative (no target): " + "; ".join(
            f"{r['label']} t={r['threads']}: {fmt_ratio(r['ratio'])}" for r in info_rows))

    with open(args.history) as f:
        history = f.read()
    if rows:
        title = f"Autograd / peer ratios, {data['meta']['date']} ({data['meta']['command']})"
        draw_chart(rows, args.png, title)
    png_rel = os.path.relpath(args.png, os.path.dirname(os.path.abspath(args.md)))
    with open(args.md, "w") as f:
        comp = None
        if args.compare and os.path.exists(args.compare):
            with open(args.compare) as cf:
                comp = json.load(cf)
            # Only a comparison made on the commit these results come from belongs here.
            if comp.get("after", "").split()[0] != data["meta"]["versions"]["autograd_commit"].split()[0]:
                comp = None
        f.write(markdown(data, res, rows, info_rows, png_rel, history, comp))
    print(f"\nreport: {os.path.relpath(args.md)} and {os.path.relpath(args.png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
