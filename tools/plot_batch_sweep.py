#!/usr/bin/python3
"""Test accuracy against batch size, one line per optimizer, from a batch-size sweep's CSV.

    /usr/bin/python3 tools/plot_batch_sweep.py sweep.csv -o accuracy_vs_batch.png --title "..."

The CSV is the one stage 4 of the study writes (examples/study/stage4_large_batch.cpp):
columns batch_size, optimizer, lr, accumulation_steps, status, validation_accuracy,
test_accuracy, seconds (accuracies as fractions; "nan" when there is none). The x axis is the
batch size on a log2 scale, the y axis the test accuracy in percent. A run that did not complete
(status "diverged", "failed", ...) or has no test accuracy is a missing point: the line breaks
there, and the legend lists the batch sizes where that happened. Batch sizes that needed
gradient accumulation are marked on the axis (x accumulation steps).
"""

import argparse
import csv
import math
import sys

from matplotlib.ticker import FixedLocator, NullLocator

from plotting import number, plt, save

NAMES = {"lars": "LARS", "lamb": "LAMB", "sgdm": "SGDM", "adamw": "AdamW"}
OK = ("completed", "early_stopped")
REQUIRED = ("batch_size", "optimizer", "status", "test_accuracy")


def read(path):
    """{optimizer: {batch: (accuracy or nan, status)}}, optimizers in order of appearance, and
    {batch: accumulation steps}."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                sys.exit(f"plot_batch_sweep.py: '{path}' has no column(s) {', '.join(missing)}")
            runs, accumulation = {}, {}
            for line, row in enumerate(reader, start=2):
                try:
                    batch = int(row["batch_size"])
                except ValueError:
                    sys.exit(f"plot_batch_sweep.py: '{path}' line {line}: batch_size '{row['batch_size']}' is not an integer")
                if batch <= 0:
                    sys.exit(f"plot_batch_sweep.py: '{path}' line {line}: batch_size {batch} must be positive")
                accuracy = number(row["test_accuracy"])
                if row["status"] not in OK:
                    accuracy = math.nan
                runs.setdefault(row["optimizer"], {})[batch] = (accuracy, row["status"])
                steps = number(row.get("accumulation_steps"))
                if not math.isnan(steps):
                    accumulation[batch] = int(steps)
    except OSError as e:
        sys.exit(f"plot_batch_sweep.py: cannot read '{path}': {e.strerror}")
    if not runs:
        sys.exit(f"plot_batch_sweep.py: '{path}' holds no runs")
    return runs, accumulation


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="the sweep's CSV (sweep.csv)")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--title", default="Test accuracy against batch size",
                        help="figure title (say which data the numbers are from)")
    args = parser.parse_args()

    runs, accumulation = read(args.csv)
    batches = sorted({b for points in runs.values() for b in points})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = "osD^v<>p*h"
    for k, (optimizer, points) in enumerate(runs.items()):
        xs = batches
        ys = [100.0 * points[b][0] if b in points else math.nan for b in xs]
        lost = [f"{b} {points[b][1]}" for b in xs if b in points and math.isnan(points[b][0])]
        label = NAMES.get(optimizer, optimizer)
        if lost:
            label += f" (missing: {', '.join(lost)})"
        ax.plot(xs, ys, marker=markers[k % len(markers)], linewidth=1.6, label=label)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{b}\n(x{accumulation[b]} acc.)" if accumulation.get(b, 1) > 1 else str(b) for b in batches])
    if len(batches) == 1:
        ax.set_xlim(batches[0] / 2, batches[0] * 2)
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(args.title, fontsize=9, wrap=True)
    fig.tight_layout()
    save(fig, args.output, 120, "plot_batch_sweep.py")


if __name__ == "__main__":
    main()
