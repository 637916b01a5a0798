#!/usr/bin/python3
"""Writes manifest.json beside the committed format-1 checkpoints: for every array of every .npz,
as NumPy reads it (a reader independent of distopt's), its shape, dtype, first element and float64
sum, and the value of every text field. test_checkpoint_compat.cpp checks what today's loaders make
of the files against it.

    /usr/bin/python3 tests/data/checkpoints/manifest.py
"""
import json
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent
manifest = {}
for path in sorted(here.glob("*.npz")):
    with np.load(path) as z:
        entry = {}
        for name in sorted(z.files):
            a = z[name]
            if a.dtype.kind in "fiu":
                entry[name] = {"shape": list(a.shape), "dtype": str(a.dtype),
                               "first": float(a.flat[0]) if a.size else None,
                               "sum": float(np.sum(a.astype(np.float64)))}
            else:
                entry[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "text": str(a)}
        manifest[path.name] = entry
tmp = here / "manifest.json.tmp"
tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
tmp.replace(here / "manifest.json")
