#!/usr/bin/python3
"""Test accuracy against simulated wall-clock time, one panel per network bandwidth.

    /usr/bin/python3 tools/plot_time_to_accuracy.py time_to_accuracy.csv -o time_to_accuracy.png [--title T]

The CSV (stage 7 writes it) has one row per method, bandwidth and evaluation point, with columns
method, bandwidth_gbit, epoch, simulated_seconds, test_accuracy (fractions) and target (the
accuracy the table's time-to-accuracy is measured at, drawn as a dashed line). Time is on a log
scale: the methods differ by orders of magnitude on a slow network. The title should name the
data. Needs only Debian's python3-matplotlib (Agg backend).
"""

import argparse
import csv
import math
import sys

from plotting import number, plt, save, wrapped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="the curve table")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--title", default="", help="title (say which data the numbers come from)")
    args = parser.parse_args()

    columns = ["method", "bandwidth_gbit", "epoch", "simulated_seconds", "test_accuracy", "target"]
    with open(args.csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            sys.exit(f"plot_time_to_accuracy.py: '{args.csv}' has no column(s) {', '.join(missing)}")
        records = list(reader)
    if not records:
        sys.exit(f"plot_time_to_accuracy.py: '{args.csv}' has no rows")

    bandwidths = list(dict.fromkeys(r["bandwidth_gbit"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    palette = plt.get_cmap("tab10")
    styles = ["-", "--", "-.", ":"]
    fig, axes = plt.subplots(1, len(bandwidths), figsize=(5.2 * len(bandwidths), 4.8), sharey=True, squeeze=False)
    for ax, bandwidth in zip(axes[0], bandwidths):
        for m, method in enumerate(methods):
            points = [(number(r["simulated_seconds"]), 100.0 * number(r["test_accuracy"]))
                      for r in records if r["method"] == method and r["bandwidth_gbit"] == bandwidth]
            points = [p for p in points if not (math.isnan(p[0]) or math.isnan(p[1]))]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, styles[(m // 10) % len(styles)], marker="o", markersize=3, color=palette(m % 10), label=method)
        target = number(next(r["target"] for r in records if r["bandwidth_gbit"] == bandwidth))
        if not math.isnan(target):
            ax.axhline(100.0 * target, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("simulated wall-clock time (s)")
        ax.set_title(f"{bandwidth} Gbit/s")
        ax.grid(True, which="both", linewidth=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    if args.title:
        fig.suptitle(wrapped(args.title, 150), fontsize=10)
    fig.tight_layout()
    save(fig, args.output, 110, "plot_time_to_accuracy.py")


if __name__ == "__main__":
    main()
