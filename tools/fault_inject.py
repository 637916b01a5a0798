#!/usr/bin/python3
"""Kills a `train` run with SIGKILL at random moments, resumes it after each, and compares the
final weights with those of an uninterrupted run, bit for bit.

    tools/fault_inject.py build/release/examples/train [--kills 50] [--seed 1] [--work DIR]

The run is small (LeNet-5 classic on 4000 synthetic CIFAR-format images, 6 epochs); the kills
land anywhere: during start-up, mid-epoch, during validation, while a checkpoint is being
written. After each kill the next attempt resumes (`--resume`) from what the killed one left;
after the last, one more attempt runs to the end. Prints one line per kill and a verdict
computed from the comparison; exit status 0 when every weight is identical, 1 otherwise.
Standard library only: the weights are compared as the bytes of the .npz members.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

RUN = os.path.join("train", "sgdm", "32", "0.01", "0.0004")


def weights(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith(("model.", "best."))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", help="the train program (build/release/examples/train)")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill moments")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--work", help="folder for the runs (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="fault_inject-")
    shutil.rmtree(os.path.join(work, "whole"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "killed"), ignore_errors=True)
    common = [args.train, "--data", "synthetic", "--synthetic-train", "4000", "--synthetic-test", "500", "--model",
              "lenet5-classic", "--batch-size", "32", "--epochs", str(args.epochs), "--seed", "11", "--log-every", "0"]
    rng = random.Random(args.seed)

    # The same data for both runs, generated once (the kills are about training, not generation).
    start = time.time()
    whole = subprocess.run(common + ["--out", os.path.join(work, "whole")], capture_output=True, text=True)
    seconds = time.time() - start
    if whole.returncode != 0:
        sys.exit(f"fault_inject: the uninterrupted run failed:\n{whole.stderr}")
    shutil.copytree(os.path.join(work, "whole", "data"), os.path.join(work, "killed", "data"))
    print(f"uninterrupted run: {seconds:.1f} s for {args.epochs} epochs")

    out = os.path.join(work, "killed")
    folder = os.path.join(out, RUN)
    kills = finished_early = 0
    while kills < args.kills:
        resume = os.path.exists(os.path.join(folder, "config.json"))
        proc = subprocess.Popen(common + ["--out", out] + (["--resume"] if resume else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Anywhere in an attempt: most of them die before the run's end, some during start-up.
        delay = rng.uniform(0.0, seconds / 2)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            epochs = sorted(int(f[:-4]) for f in os.listdir(folder) if f[:-4].isdigit()) if os.path.isdir(folder) else []
            temps = [f for f in os.listdir(folder) if ".tmp-" in f] if os.path.isdir(folder) else []
            print(f"kill {kills:2d} after {delay:5.2f} s: checkpoints {epochs or '-'}"
                  f"{', a half-written ' + temps[0].split('.tmp-')[0] if temps else ''}")
            continue
        if proc.returncode != 0:
            sys.exit(f"fault_inject: an attempt failed (exit {proc.returncode}):\n{proc.stderr.read()}")
        # The run finished before its kill: start it again from scratch so that kills keep landing.
        finished_early += 1
        shutil.rmtree(folder)
    final = subprocess.run(common + ["--out", out, "--resume"], capture_output=True, text=True)
    if final.returncode != 0:
        sys.exit(f"fault_inject: the last resume failed:\n{final.stderr}")
    a = weights(os.path.join(work, "whole", RUN, f"{args.epochs}.npz"))
    b = weights(os.path.join(folder, f"{args.epochs}.npz"))
    same = a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    differing = sorted(k for k in a if b.get(k) != a[k])
    print(f"{kills} SIGKILLs ({finished_early} attempt(s) finished before their kill and were started again); "
          f"final weights {'bit-identical to' if same else 'DIFFERENT from'} the uninterrupted run's "
          f"({len(a)} arrays compared{'' if same else ', differing: ' + ', '.join(differing)})")
    if not args.work:
        shutil.rmtree(work)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
