#!/usr/bin/python3
"""A bar chart of one column of a CSV table, one bar per row, every bar annotated.

    /usr/bin/python3 tools/plot_bars.py summary.csv --label run --value test_accuracy -o slowmo.png \
        [--title T] [--percent] [--format "{:.4g}"] [--color-by kind]

Horizontal bars in the CSV's row order (top to bottom), labelled by the --label column; a value
that is empty, "nan" or not a number (a diverged run) has no bar and is marked "n/a". --percent
shows fractions as percentages with one decimal; --color-by colours the bars by the values of
another column (e.g. slowmo / localsgd / centralized), with a legend. The title should name the
data (synthetic or CIFAR-100). Needs only Debian's python3-matplotlib (Agg backend).
"""

import argparse
import csv
import math
import sys

from plotting import number, plt, save, wrapped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="the table (header row, comma-separated)")
    parser.add_argument("--label", required=True, help="column naming each bar")
    parser.add_argument("--value", required=True, help="column giving each bar's length")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--title", default="", help="title (say which data the numbers come from)")
    parser.add_argument("--percent", action="store_true", help="show fractions as percentages (x100, one decimal)")
    parser.add_argument("--format", default="{:.4g}", help="Python format of a bar's annotation (without --percent)")
    parser.add_argument("--color-by", default="", help="column whose values pick the bars' colours")
    args = parser.parse_args()

    with open(args.csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        wanted = [args.label, args.value] + ([args.color_by] if args.color_by else [])
        missing = [c for c in wanted if c not in (reader.fieldnames or [])]
        if missing:
            sys.exit(f"plot_bars.py: '{args.csv}' has no column(s) {', '.join(missing)} "
                     f"(columns: {', '.join(reader.fieldnames or [])})")
        records = list(reader)
    if not records:
        sys.exit(f"plot_bars.py: '{args.csv}' has no rows")

    labels = [r[args.label] for r in records]
    values = [number(r[args.value]) * (100.0 if args.percent else 1.0) for r in records]
    groups = [r[args.color_by] for r in records] if args.color_by else [""] * len(records)
    palette = plt.get_cmap("tab10")
    group_names = list(dict.fromkeys(groups))
    colours = [palette(group_names.index(g) % 10) for g in groups]
    fmt = "{:.1f}" if args.percent else args.format

    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(records) + 1.8))
    positions = list(range(len(records)))
    ax.barh(positions, [0.0 if math.isnan(v) else v for v in values], color=colours)
    ax.set_yticks(positions, labels=labels)
    ax.invert_yaxis()  # the CSV's first row on top
    finite = [v for v in values if not math.isnan(v)]
    span = max([abs(v) for v in finite] + [1e-12])
    for y, v in zip(positions, values):
        text = "n/a" if math.isnan(v) else fmt.format(v)
        ax.text((0.0 if math.isnan(v) else v) + 0.01 * span, y, text, va="center", fontsize=9)
    ax.set_xlim(min([0.0] + finite) * 1.1, span * 1.15)
    ax.set_xlabel(args.value + (" (%)" if args.percent else ""))
    ax.grid(axis="x", alpha=0.3)
    if args.color_by:
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette(i % 10)) for i in range(len(group_names))]
        ax.legend(handles, group_names, title=args.color_by, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if args.title:
        ax.set_title(wrapped(args.title, 80), fontsize=9)
    fig.tight_layout()
    save(fig, args.output, 120, "plot_bars.py")
    print(f"plot_bars.py: wrote {args.output}")


if __name__ == "__main__":
    main()
