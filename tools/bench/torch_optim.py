#!/usr/bin/python3
"""Reference timings of torch.optim optimizer steps, to compare with distopt's benchmarks.

Measures one optimizer.step() (foreach=True) on a single float32 parameter tensor of P elements
whose .grad is random (fixed once, before timing) for
  SGD   (lr 0.01, momentum 0.9, weight_decay 1e-4)          minimal traffic 20 B/param
  AdamW (lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-2)    minimal traffic 28 B/param
at each requested parameter count and torch.set_num_threads() value.  Minimal traffic counts
4-byte reads/writes per parameter: SGD reads w, g, buf and writes w, buf (20 B); AdamW reads
w, g, m, v and writes w, m, v (28 B).

After warm-up steps, steps are timed one by one until at least --min-time seconds and
--min-reps repetitions have been spent; the median ms/step is reported.  Prints a markdown
table (optimizer, params, threads, ms/step, GB/s) and optionally writes the rows as JSON.

Run from the repository root with Debian's interpreter (it has torch):
    /usr/bin/python3 tools/bench/torch_optim.py                       # 1e5 .. 1e8, threads 1 and 2
    /usr/bin/python3 tools/bench/torch_optim.py --sizes 1e5 1e6 --threads 1 2 --json out.json
The 1e8 case needs ~2 GB of memory (AdamW: w, g, m, v at 400 MB each plus temporaries); run it
on a quiet machine.
"""

import argparse
import json
import platform
import statistics
import time

import torch

BYTES_PER_PARAM = {"SGD": 20, "AdamW": 28}


def make_optimizer(name, p):
    if name == "SGD":
        return torch.optim.SGD([p], lr=0.01, momentum=0.9, weight_decay=1e-4, foreach=True)
    return torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                             foreach=True)


def bench(name, n, threads, min_time, min_reps, warmup):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float32))
    # small gradients so that the weights stay finite however many steps are timed
    p.grad = torch.randn(n, generator=gen, dtype=torch.float32) * 1e-3
    opt = make_optimizer(name, p)
    with torch.no_grad():
        for _ in range(warmup):  # creates the state (momentum buffer / moments), warms caches
            opt.step()
        times = []
        start = time.perf_counter()
        while len(times) < min_reps or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    gbs = BYTES_PER_PARAM[name] * n / (ms * 1e-3) / 1e9
    del opt, p
    return {"optimizer": name, "params": n, "threads": threads, "ms_per_step": ms,
            "gb_per_s": gbs, "reps": len(times)}


def fmt_count(n):
    """1e5 for 100000, the exact number otherwise."""
    m, e = f"{n:.0e}".split("e")
    return f"{m}e{int(e)}" if int(float(f"{n:.0e}")) == n else str(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1e5", "1e6", "1e7", "1e8"],
                    help="parameter counts (e.g. 1e5 1000000)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--optimizers", nargs="+", default=["SGD", "AdamW"],
                    choices=sorted(BYTES_PER_PARAM))
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per case (default 1)")
    ap.add_argument("--min-reps", type=int, default=5, help="repetitions per case (default 5)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the rows to this JSON file")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes]

    rows = []
    print("| optimizer | params | threads | ms/step | GB/s |")
    print("|---|---:|---:|---:|---:|")
    for name in args.optimizers:
        for n in sizes:
            for t in args.threads:
                r = bench(name, n, t, args.min_time, args.min_reps, args.warmup)
                rows.append(r)
                print(f"| {name} | {fmt_count(n)} | {t} | {r['ms_per_step']:.4g} | {r['gb_per_s']:.3g} |",
                      flush=True)
    if args.json:
        meta = {"torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "foreach": True,
                "bytes_per_param": BYTES_PER_PARAM}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
