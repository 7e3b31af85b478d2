"""Turns the driver's JSON into the ratio table (printed), a Markdown report and a PNG chart.

    python3 bench/report.py [--json FILE] [--md FILE] [--png FILE]

Every ratio is Autograd / peer, computed from medians measured in the same run: for times
(B1, B2, B3, B6, B8-B12) lower is better and a target reads "<= limit"; for throughputs (B4
GFLOP/s, B5 GB/s) higher is better and a target reads ">= limit". A peer may be Autograd itself
in another case of the same run (B8-B11: replay / eager). B7's target is absolute: the median
itself (µs per op) against a limit, with no peer. The hand-written bench/HISTORY.md is copied
into the report verbatim, so notes kept there are never overwritten."""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Targets: (benchmark, Autograd's case, peer, peer's case, comparison, limit). Each is judged
# at every thread count the run used. Peer None: an absolute target, the median itself (in its
# unit) against the limit.
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
    ("B7", "chain10k_replay", None, None, "<=", 0.02),
    ("B8", "mlp64_replay", "jax", "mlp64", "<=", 0.15),
    ("B8", "mlp64_replay", "autograd", "mlp64_eager", "<=", 0.35),
    ("B9", "mlp784_replay", "autograd", "mlp784_eager", "<=", 1.0),
    ("B10", "transformer_eager", "torch", "transformer", "<=", 0.5),
    ("B10", "transformer_replay", "torch", "transformer", "<=", 0.5),
    ("B10", "transformer_replay", "autograd", "transformer_eager", "<=", 1.0),
    ("B11", "cnn_eager", "torch", "cnn", "<=", 0.7),
    ("B11", "cnn_replay", "torch", "cnn", "<=", 0.7),
    ("B11", "cnn_replay", "autograd", "cnn_eager", "<=", 1.0),
    ("B12", "chain10k", "torch", "chain10k", "<=", 0.25),
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
    ("B7", "chain10k_replay", "autograd", "chain10k_eager"),
    ("B7", "chain10k_replay", "torch", "chain10k"),
    ("B7", "chain10k_eager", "torch", "chain10k"),
    ("B8", "mlp64_eager", "jax", "mlp64"),
]

# The unit of an absolute target, for its label when the result is missing.
ABSOLUTE_UNITS = {"B7": "µs/op"}

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

    def ran(self, bench):
        """Whether the run included this benchmark."""
        return bench in self.data["meta"].get("benchmarks", [])

    def ratio(self, bench, a_case, peer, p_case, threads):
        """(ratio, autograd result, peer result); ratio None when either is missing. With peer
        None (an absolute target) the "ratio" is Autograd's median itself."""
        a = self.get(bench, a_case, "autograd", threads)
        if peer is None:
            return (None if a is None else a["median"]), a, None
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
            if a is None and p is None and not res.ran(bench):
                continue  # benchmark not run
            if ratio is None:
                status = "NO DATA"
            elif a.get("valid") is False:
                status = "INVALID"
            elif (ratio <= limit) if op == "<=" else (ratio >= limit):
                status = "PASS"
            else:
                status = "MISS"
            if peer is None:
                unit = UNITS.get(a["metric"], a["metric"]) if a else ABSOLUTE_UNITS.get(bench, "")
                label, target = f"{bench} {a_case} (absolute, {unit})", f"{op} {limit:g} {unit}"
            else:
                what = a_case if a_case == p_case else f"{a_case} vs {p_case}"
                label, target = f"{bench} {what} / {peer}", f"{op} {limit:g}"
            rows.append({"bench": bench, "label": label, "threads": t, "ratio": ratio,
                         "target": target, "op": op, "limit": limit, "status": status,
                         "absolute": peer is None, "disturbed": disturbed(res, a, p)})
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


def fmt_row_value(row):
    """A target row's number: the ratio, or an absolute target's value with its unit."""
    if row.get("absolute") and row["ratio"] is not None:
        return f"{fmt_ratio(row['ratio'])} {row['target'].split(' ', 2)[2]}"
    return fmt_ratio(row["ratio"])


def print_table(rows):
    width = max([len(r["label"]) for r in rows] + [10])
    vw = max([len(fmt_row_value(r)) for r in rows] + [8])
    tw = max([len(r["target"]) for r in rows] + [7])
    print(f"\n{'target':<{width}}  thr  {'ratio':>{vw}}  {'target':>{tw}}  result"
          + ("   (absolute: the value itself)" if any(r.get("absolute") for r in rows) else ""))
    print("-" * (width + vw + tw + 20))
    for r in rows:
        print(f"{r['label']:<{width}}  {r['threads']:>3}  {fmt_row_value(r):>{vw}}  "
              f"{r['target']:>{tw}}  {r['status']}"
              + ("  (disturbed: other processes were busy)" if r["disturbed"] else ""))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "MISS", "INVALID", "NO DATA")}
    print("-" * (width + vw + tw + 20))
    print("  ".join(f"{k}: {v}" for k, v in counts.items() if v or k in ("PASS", "MISS")))


COLOURS = {"PASS": "#2e9d4a", "MISS": "#d1443b", "INVALID": "#999999", "NO DATA": "#dddddd"}


def draw_bars(ax, rows, threads):
    """One group of bars per label (one bar per thread count) with its target as a black line;
    log scale. Returns the labels in order."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    width = 0.8 / max(len(threads), 1)
    for i, label in enumerate(labels):
        group = [r for r in rows if r["label"] == label]
        for r in group:
            j = threads.index(r["threads"])
            x = i - 0.4 + width * (j + 0.5)
            if r["ratio"] is not None and r["ratio"] > 0:
                ax.bar(x, r["ratio"], width * 0.9, color=COLOURS[r["status"]],
                       hatch="//" if j else None, edgecolor="black", linewidth=0.4)
                ax.text(x, r["ratio"], fmt_ratio(r["ratio"]) + ("†" if r["disturbed"] else ""),
                        ha="center", va="bottom", fontsize=6)
            else:
                ax.text(x, r["limit"], r["status"].lower(), rotation=90, ha="center",
                        va="bottom", fontsize=6, color="#666666")
        limit = group[0]["limit"]
        ax.hlines(limit, i - 0.45, i + 0.45, colors="black", linewidth=2.5, zorder=3)
    ax.set_yscale("log")
    # At least a decade either side of every bar and target, so the log axis has decade ticks.
    values = [r["ratio"] for r in rows if r["ratio"] and r["ratio"] > 0] + [r["limit"] for r in rows]
    ax.set_ylim(min(values) / 3, max(values) * 3)
    ax.set_xticks(range(len(labels)))
    targets = [next(r["target"] for r in rows if r["label"] == label) for label in labels]
    ax.set_xticklabels([f"{label}\n(target {t})" for label, t in zip(labels, targets)],
                       rotation=60, ha="right", fontsize=7)
    ax.grid(axis="y", which="both", alpha=0.3)
    if len(labels) == 1:
        ax.set_xlim(-0.9, 0.9)
    return labels


def draw_chart(rows, path, title):
    """Ratios on the left; absolute targets (B7: µs per op), which are not ratios, in a panel
    of their own on the right with their own axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ratio_rows = [r for r in rows if not r.get("absolute")]
    abs_rows = [r for r in rows if r.get("absolute")]
    threads = sorted({r["threads"] for r in rows})
    n_ratio = len(dict.fromkeys(r["label"] for r in ratio_rows))
    n_abs = len(dict.fromkeys(r["label"] for r in abs_rows))
    panels = [(ratio_rows, max(n_ratio, 1))] if ratio_rows else []
    panels += [(abs_rows, n_abs)] if abs_rows else []
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(max(9, 0.8 * (n_ratio + n_abs) + 5), 6.5),
                             gridspec_kw={"width_ratios": [w for _, w in panels]})
    for ax, (panel_rows, _) in zip(axes[0], panels):
        draw_bars(ax, panel_rows, threads)
        if panel_rows is abs_rows:
            units = sorted({r["target"].split(" ", 2)[2] for r in abs_rows})
            ax.set_ylabel(f"Autograd's value ({', '.join(units)}; log scale)")
            ax.set_title("absolute targets\n(a value, not a ratio)", fontsize=8)
        else:
            ax.set_ylabel("ratio Autograd / peer (log scale)")
    fig.suptitle(title, fontsize=9)
    legend = [Patch(facecolor=COLOURS[s], label=s) for s in ("PASS", "MISS", "INVALID")]
    legend += [Patch(facecolor="white", edgecolor="black", hatch="//" if j else None,
                     label=f"{t} thread{'s' if t > 1 else ''}") for j, t in enumerate(threads)]
    legend.append(Patch(facecolor="black", label="target (black line)"))
    legend.append(Patch(facecolor="white", edgecolor="white",
                        label="† other processes were busy"))
    axes[0][-1].legend(handles=legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def raw_table(res):
    """Medians per benchmark, case and peer, one column per thread count."""
    order = {"autograd": 0, "cblas": 1, "libtorch": 2, "torch": 3, "micrograd": 4, "jax": 5}
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
    if meta.get("quick") or meta.get("command", "").strip() != "bash bench/run.sh":
        out += ["> **Partial or quick run** (fewer repetitions or not every benchmark): for "
                "development only, not for comparison.", ""]
    out += [f"- **Date:** {meta['date']} (the run took {meta.get('seconds', '?')} s)",
            f"- **Command:** `{meta['command']}`",
            f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB memory, "
            f"Linux {m['kernel']}",
            f"- **Versions:** Autograd built from commit {v['autograd_commit']}; torch {v['torch']}; "
            f"numpy {v['numpy']}; micrograd {v['micrograd']}; jax {v.get('jax', '?')}; "
            f"matplotlib {v['matplotlib']}; "
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
                + (f" ({f['runs']} runs)" if f.get("runs", 1) > 1 else "")
                + (f"; its results printed before the failure were kept: {f['kept']}"
                   if f.get("kept") else "; nothing it measured is reported")
                for f in data["failures"]]
        out.append("")

    out += ["## Targets", "",
            "Ratio = Autograd / peer, from medians of the same run. Times (B1, B2, B3, B6, "
            "B8-B12): lower is better, target `<=`. Throughputs (B4, B5): higher is better, target "
            "`>=`. A peer named autograd is Autograd's other case in the same process (B8-B11: "
            "replay / eager). Rows marked *absolute* (B7) are not ratios: the value is "
            "Autograd's median itself, in the unit shown, against an absolute limit (in the "
            "chart, the right-hand panel).",
            "", "| Target | Threads | Ratio (absolute: value) | Target | Result |",
            "|---|---|---|---|---|"]
    out += [f"| {r['label']} | {r['threads']} | {fmt_row_value(r)} | {r['target']} | "
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
                "What each peer computed, compared with a reference: PyTorch for B1's and "
                "B12's four leaf gradients and final value, B2/B3's first loss, B6's final value "
                "and B7's gradients; JAX for B8's first and last warm-up losses; Autograd's eager "
                "step for B9's; PyTorch's step for B10's and B11's (both Autograd cases), and the "
                "eager step for their replay's last warm-up loss. A failed B1 or B12 check on "
                "Autograd, a failed check of a replay (B7-B11) or of B10's and B11's eager step "
                "marks that result INVALID.", "",
                "| Bench | Quantity | Peer | Case | Reference | Threads | rtol | Agrees |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {c['bench']} | {c['what']} | {c['peer']} | {c.get('case', '—')} | "
                f"{c.get('reference', 'torch')} | {c['threads']} | {c['rtol']:g} | "
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
