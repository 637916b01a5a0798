#!/usr/bin/python3
"""Real tables as .npz arrays for distopt's own-data examples and tests, from the CSV files that
Debian's python3-sklearn ships (no network, no scikit-learn code: only its data files).

    sklearn_tables.py [OUT_DIR]     (default: tests/data/tables of this repository)

Writes, each as np.savez(x=features float32 [N, d], y=targets):
  breast_cancer.npz  569 x 30, y int64 class ids (0 malignant, 1 benign)      Wolberg et al. 1995
  wine.npz           178 x 13, y int64 class ids (3 cultivars)                UCI wine
  diabetes.npz       442 x 10, y float32 [N, 1] disease progression after a year  Efron et al. 2004
Features are the raw values (the library standardises them with the training split's statistics).
The files are the same bytes on every run (np.savez of fixed arrays).
"""
import gzip
import sys
from pathlib import Path

import numpy as np

DATA = Path("/usr/lib/python3/dist-packages/sklearn/datasets/data")


def headed_csv(name):
    """sklearn's layout: a first line 'n_samples,n_features,class names...', then rows of
    features followed by the class id."""
    with (DATA / name).open() as f:
        head = f.readline().strip().split(",")
        n, d = int(head[0]), int(head[1])
        rows = np.loadtxt(f, delimiter=",", dtype=np.float64)
    assert rows.shape == (n, d + 1), (name, rows.shape)
    return rows[:, :d].astype(np.float32), rows[:, d].astype(np.int64)


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "tests" / "data" / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for name, csv in (("breast_cancer", "breast_cancer.csv"), ("wine", "wine_data.csv")):
        x, y = headed_csv(csv)
        np.savez(out / f"{name}.npz", x=x, y=y)
        print(f"{out / name}.npz: x {x.shape} float32, y {y.shape} int64, {len(np.unique(y))} classes")
    with gzip.open(DATA / "diabetes_data_raw.csv.gz") as f:
        x = np.loadtxt(f, dtype=np.float64).astype(np.float32)
    with gzip.open(DATA / "diabetes_target.csv.gz") as f:
        y = np.loadtxt(f, dtype=np.float64).astype(np.float32).reshape(-1, 1)
    assert x.shape == (442, 10) and y.shape == (442, 1)
    np.savez(out / "diabetes.npz", x=x, y=y)
    print(f"{out / 'diabetes'}.npz: x {x.shape} float32, y {y.shape} float32 (regression)")


if __name__ == "__main__":
    main()
