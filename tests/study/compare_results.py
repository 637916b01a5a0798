#!/usr/bin/python3
"""Checks that two study runs reached the same numbers: the same rows in each stage's summary.csv
with every cell equal, except those that measure time or the number of processes (wall, sync and
all-reduce seconds, images per second, ranks). Exit status 1, naming the file, row and column, on
the first difference; 2 when a file is missing.

    compare_results.py RESULTS_A RESULTS_B STAGE...
"""
import csv
import sys
from pathlib import Path

TIMING = ("seconds", "images_per_second", "ranks", "source")


def rows(path):
    if not path.is_file():
        print(f"missing: {path}")
        sys.exit(2)
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def main():
    a_root, b_root, stages = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    compared = 0
    for stage in stages:
        a_rows, b_rows = rows(a_root / stage / "summary.csv"), rows(b_root / stage / "summary.csv")
        if len(a_rows) != len(b_rows):
            print(f"{stage}/summary.csv: {len(a_rows)} rows against {len(b_rows)}")
            sys.exit(1)
        for i, (a, b) in enumerate(zip(a_rows, b_rows)):
            for column in a:
                if any(t in column for t in TIMING):
                    continue
                if a[column] != b.get(column):
                    print(f"{stage}/summary.csv row {i + 1} ({a.get('run', '')}), column '{column}': "
                          f"'{a[column]}' against '{b.get(column)}'")
                    sys.exit(1)
                compared += 1
    print(f"{compared} cells equal in {len(stages)} stages")


if __name__ == "__main__":
    main()
