#!/usr/bin/python3
"""Training curves of one or several runs, from their metrics.jsonl (train/metrics.hpp).

    /usr/bin/python3 tools/plot.py RUN_OR_JSONL [RUN_OR_JSONL ...] -o out.png [--title T] [--metric M ...]

Each argument is a run folder (holding metrics.jsonl) or a metrics file. A file whose records
carry a "run" field (a stage's metrics.jsonl, shared by its runs) holds one run per value of it;
--run ID (repeatable) keeps only those runs, in that order. One panel per metric, one line per
run, labelled by its "run" field or its folder below `train/` (optimizer/batch/lr/wd) and, when
it did not complete, its status:
  loss, accuracy     training (solid) and validation (dashed) per epoch
  lr                 per step from the "step" records, else per epoch
  anything else      that field of the "epoch" records per epoch (validation_top5,
                     images_per_second, seconds, best_validation_accuracy, ...)
Tolerated: null values (a diverged run writes NaN as null), records repeated after a --resume
(the last one of an epoch or step wins), a half-written last line (a killed run).
"""

import argparse
import json
import math
import os
import sys

from plotting import plt, save

DEFAULT_METRICS = ["loss", "accuracy", "lr"]


def metrics_file(path):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"plot.py: no metrics file '{path}'")
    return path


def read_runs(path):
    """Per value of the records' "run" field (None when they have none): the run's epoch records
    (last per epoch), step records (last per step) and summary, in the order the runs first appear."""
    runs = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"plot.py: {path} line {number} skipped: {e}", file=sys.stderr)
                continue
            epochs, steps, summary = runs.setdefault(record.get("run"), ({}, {}, [None]))
            event = record.get("event")
            if event == "epoch":
                epochs[record["epoch"]] = record
            elif event == "step":
                steps[record["step"]] = record
            elif event == "summary":
                summary[0] = record
    return {run: ([e[k] for k in sorted(e)], [s[k] for k in sorted(s)], summary[0]) for run, (e, s, summary) in runs.items()}


def value(record, name):
    v = record.get(name)
    return math.nan if v is None else float(v)


def label_of(path, run, epochs, summary):
    if run is not None:
        label = run
        if summary and summary.get("status") not in (None, "completed"):
            label += f" [{summary['status']}]"
        return label
    folder = os.path.dirname(os.path.abspath(path))
    parts = folder.split(os.sep)
    below = parts[len(parts) - parts[::-1].index("train"):] if "train" in parts else []
    if below:  # the library's layout: train/<optimizer>/<batch_size>/<lr>/<weight_decay>
        label = "/".join(below)
    else:
        label = os.path.basename(folder)
        records = epochs or ([summary] if summary else [])
        if records and "optimizer" in records[-1]:
            label = f"{label} ({records[-1]['optimizer']})"
    if summary and summary.get("status") not in (None, "completed"):
        label += f" [{summary['status']}]"
    return label


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_JSONL", help="a run folder or its metrics.jsonl")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--metric", action="append", default=None,
                        help=f"a panel (repeatable): loss, accuracy, lr or a field of the epoch records "
                             f"[default: {' '.join(DEFAULT_METRICS)}]")
    parser.add_argument("--run", action="append", default=None, metavar="ID",
                        help="only the run of this id in files shared by several runs (repeatable)")
    args = parser.parse_args()

    panels = args.metric or DEFAULT_METRICS
    runs, found = [], {}
    for arg in args.runs:
        path = metrics_file(arg)
        for run, (epochs, steps, summary) in read_runs(path).items():
            found[run] = (label_of(path, run, epochs, summary), epochs, steps)
            if args.run is None:
                runs.append(found[run])
    if args.run is not None:
        missing = [r for r in args.run if r not in found]
        if missing:
            sys.exit(f"plot.py: no records of run(s) {', '.join(missing)} in {', '.join(args.runs)}")
        runs = [found[r] for r in args.run]
    seen = {}
    for i, (label, epochs, steps) in enumerate(runs):  # two runs with one label: number them
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            runs[i] = (f"{label} #{seen[label]}", epochs, steps)

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes[0], panels):
        for i, (label, epochs, steps) in enumerate(runs):
            colour = colours[i % len(colours)]
            x = [r["epoch"] for r in epochs]
            if panel in ("loss", "accuracy"):
                ax.plot(x, [value(r, panel) for r in epochs], "-o", color=colour, markersize=3, label=f"{label} train")
                ax.plot(x, [value(r, f"validation_{panel}") for r in epochs], "--s", color=colour, markersize=3,
                        label=f"{label} validation")
                ax.set_xlabel("epoch")
            elif panel == "lr":
                points = [(r["step"], value(r, "lr")) for r in steps] + [(r["step"], value(r, "lr")) for r in epochs]
                points = sorted(dict(points).items())
                ax.plot([p[0] for p in points], [p[1] for p in points], "-", color=colour, label=label)
                ax.set_xlabel("step")
            else:
                ax.plot(x, [value(r, panel) for r in epochs], "-o", color=colour, markersize=3, label=label)
                ax.set_xlabel("epoch")
        ax.set_title({"loss": "loss (cross-entropy)", "accuracy": "top-1 accuracy", "lr": "learning rate"}.get(panel, panel))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        if panel != "lr":
            ax.xaxis.get_major_locator().set_params(integer=True)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    save(fig, args.output, 110, "plot.py")
    print(f"plot.py: wrote {args.output}")


if __name__ == "__main__":
    main()
