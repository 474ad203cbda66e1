#!/usr/bin/env python3
"""Draws the scaling figures of `bench/run --scaling` (its CSV) into one PNG.

Usage: bench/plot.py bench/results/scaling-<stamp>.csv bench/results/scaling-<stamp>.png [WHERE]

WHERE names the cluster in the title (default: "the local control plane").

Four panels against N (log scale), shared watch vs 1 s polling, no-op pods (solid) and runner
VMs (dashed) where measured: API requests per boot (counted by the API server), overhead per
boot (p50; a point whose boots did not all succeed says how many did), the 1 ms timer probe's
lateness (p99 and max, with the goals 2 ms and 10 ms and the idle baseline), and
memory per in-flight boot (peaks of the VM and of the VM + NIF resident set, an upper bound,
and the VM's live memory per boot in flight, with the goal 100 KB; N >= 50 only).
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"watch": "tab:blue", "poll": "tab:orange"}
STYLES = {"noop": "-", "runner": "--"}
KINDS = {"noop": "no-op pods", "runner": "runner VMs"}


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def series(rows, kind, strategy, column, min_n):
    points = [
        (int(r["n"]), number(r[column]))
        for r in rows
        if r["kind"] == kind and r["strategy"] == strategy and int(r["n"]) >= min_n
    ]
    # Log axes: a value of 0 or less (memory within the VM's noise) has no place on them.
    points = sorted(p for p in points if p[1] is not None and p[1] > 0)
    return [p[0] for p in points], [p[1] for p in points]


def panel(ax, rows, column, title, ylabel, marker="o", suffix="", log_y=False, min_n=1):
    for kind in STYLES:
        for strategy in COLORS:
            xs, ys = series(rows, kind, strategy, column, min_n)
            if xs:
                ax.plot(
                    xs,
                    ys,
                    STYLES[kind],
                    marker=marker,
                    color=COLORS[strategy],
                    label=f"{strategy}, {KINDS[kind]}{suffix}",
                )
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("N boots at once")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def main(csv_path, png_path, where="the local control plane"):
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (req, over), (probe, mem) = axes

    panel(req, rows, "requests_per_boot", "API requests per boot (counted by the API server)", "requests / boot")
    req.set_ylim(bottom=0)
    req.legend(fontsize=8)

    panel(over, rows, "overhead_p50_ms", "Overhead per boot, p50 (boot minus the node's own part)", "ms", log_y=True)
    # Boots that failed have no overhead: say how many the point stands for.
    for r in rows:
        if r["kind"] in STYLES and r["ok"] and int(r["ok"]) < int(r["n"]) and number(r["overhead_p50_ms"]):
            over.annotate(
                f'{r["ok"]}/{r["n"]} ok',
                (int(r["n"]), number(r["overhead_p50_ms"])),
                textcoords="offset points",
                xytext=(-60, 4 if r["strategy"] == "watch" else -12),
                fontsize=7,
                color=COLORS[r["strategy"]],
            )
    over.legend(fontsize=8)

    panel(probe, rows, "probe_p99_ms", "1 ms timer probe lateness in the parent VM", "ms", suffix=" p99")
    panel(probe, rows, "probe_max_ms", "1 ms timer probe lateness in the parent VM", "ms", marker="^", suffix=" max")
    for r in rows:
        if r["kind"] == "idle":
            probe.axhline(number(r["probe_p99_ms"]), color="tab:green", linestyle="-.", label="idle baseline p99")
            probe.axhline(number(r["probe_max_ms"]), color="tab:green", linestyle="--", label="idle baseline max")
    probe.axhline(2, color="grey", linestyle=":", label="goal p99 2 ms")
    probe.axhline(10, color="black", linestyle=":", label="goal max 10 ms")
    probe.set_yscale("log")
    probe.legend(fontsize=7)

    # Below N = 50 the memory deltas are within the VM's own noise (a few hundred KB).
    title = "Memory per in-flight boot (N >= 50)"
    panel(mem, rows, "rss_kb_per_boot", title, "KB", suffix=" VM + NIF (RSS) peak", min_n=50)
    panel(mem, rows, "vm_kb_per_boot", title, "KB", marker="s", suffix=" VM peak", min_n=50)
    panel(mem, rows, "live_kb_per_boot", title, "KB", marker="D", suffix=" VM live", min_n=50)
    mem.axhline(100, color="black", linestyle=":", label="goal 100 KB")
    mem.set_yscale("log")
    mem.legend(fontsize=7)

    fig.suptitle(f"FLAMEK8sBackend: N concurrent boots on {where}, shared watch vs 1 s polling")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
