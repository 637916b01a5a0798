#!/usr/bin/python3
"""A heatmap of one column of a CSV table over two others, every cell annotated.

    /usr/bin/python3 tools/plot_heatmap.py summary.csv --rows K --cols H --value test_accuracy -o acc.png \
        [--where COLUMN=VALUE ...] [--title T] [--percent] [--format "{:.4g}"] [--cmap viridis]

One cell per (row key, column key) pair of the CSV (e.g. the K x H grid of study stage 5's
summary.csv). Rows whose row or column key is empty are skipped (a baseline that is not part of
the grid); keys sort numerically when they are all numbers, else as text. A value that is empty,
"nan" or not a number (a diverged run, a cell not run) is a grey cell marked "n/a". Two rows
with the same pair are an error: --where keeps only the rows whose COLUMN holds VALUE (e.g.
grid=yes, the grid's cells among other runs at the same K and H, such as other seeds or
baselines). --percent shows fractions as percentages with one decimal. The title should name
the data (synthetic or CIFAR-100). Needs only Debian's python3-matplotlib (Agg backend).
"""

import argparse
import csv
import math
import sys

import numpy as np

from plotting import number, plt, save, wrapped


def sort_keys(keys):
    if all(not math.isnan(number(k)) for k in keys):
        return sorted(keys, key=number)
    return sorted(keys)


def read_grid(path, rows, cols, value, where=()):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (rows, cols, value, *(w for w, _ in where)) if c not in (reader.fieldnames or [])]
        if missing:
            sys.exit(f"plot_heatmap.py: '{path}' has no column(s) {', '.join(missing)} "
                     f"(columns: {', '.join(reader.fieldnames or [])})")
        cells = {}
        for line, record in enumerate(reader, 2):
            if any(record[w] != v for w, v in where):
                continue
            r, c = record[rows].strip(), record[cols].strip()
            if not r or not c:
                continue
            if (r, c) in cells:
                sys.exit(f"plot_heatmap.py: '{path}' line {line}: a second row for {rows} = {r}, {cols} = {c}")
            cells[(r, c)] = number(record[value])
    if not cells:
        sys.exit(f"plot_heatmap.py: '{path}' has no row with both {rows} and {cols}")
    row_keys = sort_keys({r for r, _ in cells})
    col_keys = sort_keys({c for _, c in cells})
    grid = np.full((len(row_keys), len(col_keys)), np.nan)
    for (r, c), v in cells.items():
        grid[row_keys.index(r), col_keys.index(c)] = v
    return row_keys, col_keys, grid


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="the table (header row, comma-separated)")
    parser.add_argument("--rows", required=True, help="column whose values are the heatmap's rows")
    parser.add_argument("--cols", required=True, help="column whose values are the heatmap's columns")
    parser.add_argument("--value", required=True, help="column shown in the cells")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="keep only the rows whose COLUMN is VALUE (repeatable)")
    parser.add_argument("--title", default="", help="title (say which data the numbers come from)")
    parser.add_argument("--percent", action="store_true", help="show fractions as percentages (x100, one decimal)")
    parser.add_argument("--format", default="{:.4g}", help="Python format of a cell's annotation (without --percent)")
    parser.add_argument("--cmap", default="viridis", help="matplotlib colour map")
    args = parser.parse_args()

    where = []
    for w in args.where:
        column, sep, wanted = w.partition("=")
        if not sep or not column:
            sys.exit(f"plot_heatmap.py: --where '{w}' is not COLUMN=VALUE")
        where.append((column, wanted))
    row_keys, col_keys, grid = read_grid(args.csv, args.rows, args.cols, args.value, where)
    shown = grid * 100.0 if args.percent else grid
    fmt = "{:.1f}" if args.percent else args.format

    fig, ax = plt.subplots(figsize=(1.3 * len(col_keys) + 3.0, 0.9 * len(row_keys) + 2.2))
    cmap = plt.get_cmap(args.cmap).copy()
    cmap.set_bad("#cccccc")
    masked = np.ma.masked_invalid(shown)
    image = ax.imshow(masked, cmap=cmap, aspect="auto")
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label(args.value + (" (%)" if args.percent else ""))
    ax.set_xticks(range(len(col_keys)), labels=col_keys)
    ax.set_yticks(range(len(row_keys)), labels=row_keys)
    ax.set_xlabel(args.cols)
    ax.set_ylabel(args.rows)
    finite = shown[np.isfinite(shown)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    for i in range(len(row_keys)):
        for j in range(len(col_keys)):
            v = shown[i, j]
            if math.isnan(v):
                ax.text(j, i, "n/a", ha="center", va="center", color="black")
                continue
            # Dark text on the bright end of the map, light on the dark end.
            bright = high > low and (v - low) / (high - low) > 0.6
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="black" if bright else "white", fontsize=11)
    if args.title:
        ax.set_title(wrapped(args.title, 70), fontsize=9)
    fig.tight_layout()
    save(fig, args.output, 120, "plot_heatmap.py")
    print(f"plot_heatmap.py: wrote {args.output}")


if __name__ == "__main__":
    main()
