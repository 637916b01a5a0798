#!/usr/bin/python3
"""Reference timings of the LeNet-5 training step and forward pass in PyTorch, beside distopt's.

The model and step are those of bench_lenet's LibTorch reference
(benchmarks/torch_reference/torch_lenet.hpp) and of distopt's nn::LeNet5:
  preset hsu      conv1 Conv2d(3,64,5), ReLU, MaxPool2d(2,2), conv2 Conv2d(64,64,5), ReLU,
                  MaxPool2d(2,2), flatten, fc1 Linear(1600,384), ReLU, fc2 Linear(384,192), ReLU,
                  fc3 Linear(192,100)                                       815,332 parameters
  preset classic  conv1 Conv2d(3,6,5), conv2 Conv2d(6,16,5), fc1 Linear(400,120),
                  fc2 Linear(120,84), fc3 Linear(84,100), same activations   69,656 parameters
Input float32 [batch, 3, 32, 32] from N(0, 1), labels uniform in [0, 100), both fixed (seeded)
before timing.
  train    optimizer.zero_grad(), forward, mean cross-entropy, backward, SGD step
           (lr 0.01, momentum 0.9, weight_decay 4e-4; torch.optim.SGD defaults otherwise)
  forward  the forward pass under torch.inference_mode()
for each preset, batch size and torch.set_num_threads() value.  After warm-up, steps are timed
one by one until at least --min-time seconds and --min-reps repetitions have been spent; the
reported images/s is batch / median seconds per step.  Prints a markdown table and optionally
writes the rows as JSON.  The first lines name the BLAS the process actually loaded (torch's
Linear layers go through it; its convolutions run in oneDNN).

Run from the repository root with Debian's interpreter (it has torch):
    /usr/bin/python3 tools/bench/torch_lenet.py        # hsu + classic, batch 64 + 256, threads 1 + 2
    /usr/bin/python3 tools/bench/torch_lenet.py --presets hsu --batches 64 --threads 2 --json o.json

"As installed" and "tuned": which OpenBLAS torch uses is decided by the dynamic loader; the
wrapper tools/bench/torch_env.sh chooses it for one command without touching the system's
update-alternatives (needs libopenblas0-pthread and libopenblas0-openmp: scripts/setup-deps --tools):
    tools/bench/torch_env.sh installed /usr/bin/python3 tools/bench/torch_lenet.py
        what a fresh Debian machine with libtorch-dev gets: the pthread build of OpenBLAS
        (apt's recommended libopenblas0), its own core detection and thread pool
    tools/bench/torch_env.sh tuned /usr/bin/python3 tools/bench/torch_lenet.py
        the OpenMP build of OpenBLAS (shares torch's OpenMP threads and follows
        torch.set_num_threads) with OPENBLAS_CORETYPE set for this CPU (SkylakeX, Zen or Haswell)
    tools/bench/torch_env.sh reference ...   Debian's netlib BLAS (--no-install-recommends)
Run without the wrapper, the script measures whatever the alternatives currently point to.
On 2 cores, keep the machine otherwise idle: the pthread OpenBLAS pool spins beside torch's
OpenMP threads, and any other load makes the "installed" numbers collapse and scatter.
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# conv1 channels, conv2 channels, fc1 width, fc2 width; 100 classes; 5x5 kernels throughout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lenet_torch import CLASSES, PRESETS, LeNet5  # noqa: E402  (tools/lenet_torch.py)


def blas_info():
    """The BLAS this process mapped (libtorch_cpu's libblas.so.3), and OpenBLAS's own report."""
    openblas = blas = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            name = os.path.basename(path)
            if openblas is None and name.startswith("libopenblas"):
                openblas = path
            if blas is None and name.startswith("libblas.so"):
                blas = path
    if openblas is None:
        return {"library": blas, "config": None, "core": None, "parallel": None}
    lib = ctypes.CDLL(openblas)  # already loaded: the same handle
    lib.openblas_get_config.restype = ctypes.c_char_p
    lib.openblas_get_corename.restype = ctypes.c_char_p
    parallel = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(lib.openblas_get_parallel())
    return {"library": openblas, "config": lib.openblas_get_config().decode(),
            "core": lib.openblas_get_corename().decode(), "parallel": parallel}


def bench(preset, batch, threads, op, min_time, min_reps, warmup, seed=0):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = LeNet5(preset)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, CLASSES, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-4)

    def train_step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def forward():
        with torch.inference_mode():
            return model(x)

    step = train_step if op == "train" else forward
    for _ in range(warmup):
        step()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"preset": preset, "batch": batch, "threads": threads, "op": op,
            "ms_per_step": median * 1e3, "images_per_s": batch / median,
            "ms_fastest": min(times) * 1e3, "reps": len(times),
            "loss_after": float(train_step()) if op == "train" else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["hsu", "classic"], choices=sorted(PRESETS))
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--ops", nargs="+", default=["train", "forward"], choices=["train", "forward"])
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per case (default 2)")
    ap.add_argument("--min-reps", type=int, default=10, help="repetitions per case (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the rows to this JSON file")
    args = ap.parse_args()

    torch.ones(2, 2) @ torch.ones(2, 2)  # make sure the BLAS is initialised before asking
    blas = blas_info()
    env = {k: os.environ.get(k) for k in ("DISTOPT_TORCH_ENV", "OPENBLAS_CORETYPE",
                                          "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    print(f"torch {torch.__version__}; BLAS {blas['config'] or 'libblas.so.3'}"
          + (f", core {blas['core']}, {blas['parallel']}" if blas["core"] else "")
          + f" ({blas['library']})")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items() if v is not None or
                                      k == "DISTOPT_TORCH_ENV"))
    print()

    rows = []
    print("| preset | batch | threads | op | ms/step | images/s |")
    print("|---|---:|---:|---|---:|---:|")
    for preset in args.presets:
        for batch in args.batches:
            for threads in args.threads:
                for op in args.ops:
                    r = bench(preset, batch, threads, op, args.min_time, args.min_reps,
                              args.warmup)
                    rows.append(r)
                    print(f"| {preset} | {batch} | {threads} | {op} | {r['ms_per_step']:.4g} | "
                          f"{r['images_per_s']:,.0f} |", flush=True)
    if args.json:
        meta = {"torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "cpu_count": os.cpu_count(), "blas": blas,
                "env": env, "optimizer": "SGD lr 0.01 momentum 0.9 weight_decay 4e-4",
                "min_time": args.min_time, "min_reps": args.min_reps, "warmup": args.warmup}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
