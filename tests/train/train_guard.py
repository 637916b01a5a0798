#!/usr/bin/python3
"""The train program refuses what it cannot honour and loses nothing (issue 29), as a user meets it.

    train_guard.py TRAIN_BINARY WORK_DIR

Each check runs the real program on a small synthetic set: non-finite numbers refused with the
real bounds; a second process on a run folder refused naming the first, whose run ends intact;
a run of another configuration refused naming the difference; SIGINT in the middle of an epoch
stops with a checkpoint, status "interrupted", exit 130 and the command that resumes, which then
reaches the bits of an uninterrupted run; SIGHUP exits 129; a second signal ends the process at
once; a resume with another --momentum is refused; a damaged newest checkpoint is set aside and
the one before resumed; a dead writer's temporary file is removed; 007.npz is named and ignored.
Standard library only (the weights are compared as the bytes of the .npz members).
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

TRAIN, WORK = sys.argv[1], sys.argv[2]
DATA = ["--data", "synthetic", "--synthetic-train", "2000", "--synthetic-test", "100", "--model", "lenet5-classic",
        "--batch-size", "32", "--threads", "1", "--log-every", "1"]
RUN = os.path.join("train", "sgdm", "32", "0.01", "0.0004")


def fail(message, *outputs):
    print("FAIL:", message)
    for o in outputs:
        print(o)
    sys.exit(1)


def train(*args, out, check=None):
    p = subprocess.run([TRAIN, *DATA, "--out", out, *args], capture_output=True, text=True, timeout=600)
    if check is not None and p.returncode != check:
        fail(f"train {' '.join(args)} exited {p.returncode}, expected {check}", p.stdout, p.stderr)
    return p


def start(*args, out):
    return subprocess.Popen([TRAIN, *DATA, "--out", out, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(out, event):
    path = os.path.join(out, RUN, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in (json.loads(line) for line in f if line.strip()) if r.get("event") == event]


def wait_for_step(proc, out, epoch):
    """Blocks until the run has logged a step of `epoch` (1-based)."""
    deadline = time.time() + 300
    while not any(r["epoch"] == epoch for r in records(out, "step")):
        if proc.poll() is not None:
            fail(f"the run ended before a step of epoch {epoch}", *proc.communicate())
        if time.time() > deadline:
            fail(f"no step of epoch {epoch} within 300 s")
        time.sleep(0.01)


def signalled(name, seed, epoch, *signals):
    """A 3-epoch run in WORK/name sent `signals` once it has logged a step of `epoch`; its exit
    status, output and folder."""
    out = os.path.join(WORK, name)
    proc = start("--epochs", "3", "--seed", str(seed), out=out)
    wait_for_step(proc, out, epoch)
    for s in signals:
        proc.send_signal(s)
    stdout, stderr = proc.communicate(timeout=600)
    return proc.returncode, stdout, stderr, out


def summary(out):
    with open(os.path.join(out, RUN, "summary.csv")) as f:
        return list(csv.DictReader(f))[0]


def weights(path):
    """The bytes of every model.* and best.* member: the weights, bit for bit."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith(("model.", "best."))}


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# Numbers are numbers: NaN and infinities refused, the real bounds printed.
for flag, value, expect in [("--lr", "nan", "not a finite number"), ("--weight-decay", "inf", "not a finite number"),
                            ("--momentum", "-nan", "not a finite number"), ("--lr", "1e-13", "[1e-12, 1000]"),
                            ("--gamma", "nan", "not a finite number"), ("--validation-ratio", "inf", "not a finite number")]:
    p = train(flag, value, out=os.path.join(WORK, "nan"))
    if p.returncode == 0 or expect not in p.stderr:
        fail(f"{flag} {value}: exit {p.returncode}, expected a refusal saying '{expect}'", p.stderr)
if os.path.exists(os.path.join(WORK, "nan", "train")):
    fail("a refused command line created a run folder")

# Two processes on one folder: the second is refused naming the first, which finishes intact.
two = os.path.join(WORK, "two")
first = start("--epochs", "4", "--seed", "3", out=two)
wait_for_step(first, two, 1)
second = train("--epochs", "4", "--seed", "4", out=two)
if second.returncode != 1 or "in use by another process" not in second.stderr or f"PID {first.pid}" not in second.stderr:
    fail("a second run on a claimed folder was not refused naming the first", second.stdout, second.stderr)
out, err = first.communicate(timeout=600)
if first.returncode != 0:
    fail("the first run did not finish", out, err)
if summary(two)["seed"] != "3" or summary(two)["status"] != "completed" or len(records(two, "epoch")) != 4:
    fail(f"the first run's results were touched: {summary(two)}, {len(records(two, 'epoch'))} epoch records")
# Finished, unlocked, and still not another seed's: refused naming the difference.
p = train("--epochs", "4", "--seed", "4", out=two, check=1)
if "seed: 3 -> 4" not in p.stderr:
    fail("a run of another seed was not refused by name", p.stderr)
# A resume with another momentum is refused naming it.
p = train("--epochs", "5", "--seed", "3", "--momentum", "0.8", "--resume", out=two, check=1)
if "momentum: 0.9 -> 0.8" not in p.stderr:
    fail("a resume with another --momentum was not refused by name", p.stderr)

# SIGINT in the middle of epoch 2: checkpoint, summary "interrupted", exit 130, the resume command;
# resumed, the same bits as an uninterrupted run.
whole = os.path.join(WORK, "whole")
train("--epochs", "3", "--seed", "5", out=whole, check=0)
code, out, err, cut = signalled("cut", 5, 2, signal.SIGINT)
if code != 130:
    fail(f"SIGINT: exit {code}, expected 130", out, err)
if "--resume" not in err or summary(cut)["status"] != "interrupted":
    fail("SIGINT: no resume command or no 'interrupted' summary", err, summary(cut))
if not os.path.exists(os.path.join(cut, RUN, "interrupted.npz")):
    fail("SIGINT: no checkpoint of the epoch in progress", os.listdir(os.path.join(cut, RUN)))
train("--epochs", "3", "--seed", "5", "--resume", out=cut, check=0)
if weights(os.path.join(cut, RUN, "3.npz")) != weights(os.path.join(whole, RUN, "3.npz")):
    fail("SIGINT mid-epoch then --resume: not the bits of the uninterrupted run")

# SIGHUP: exit 129. Two signals: the second ends the process at once.
code, out, err, _ = signalled("hup", 6, 1, signal.SIGHUP)
if code != 129:
    fail(f"SIGHUP: exit {code}, expected 129", out, err)
code, out, err, _ = signalled("twice", 7, 1, signal.SIGTERM, signal.SIGTERM)
if code not in (-signal.SIGTERM, 128 + signal.SIGTERM):
    fail(f"two SIGTERMs: exit {code}", out, err)

# A damaged newest checkpoint: named, set aside, the one before resumed; a dead writer's
# temporary file removed; 007.npz named and ignored.
folder = os.path.join(whole, RUN)
with open(os.path.join(folder, "3.npz"), "r+b") as f:
    f.seek(os.path.getsize(os.path.join(folder, "3.npz")) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x20]))
dead = subprocess.Popen(["true"])
dead.wait()
leftover = f"3.npz.tmp-{dead.pid}-0123456789abcdef"
open(os.path.join(folder, leftover), "wb").write(b"half a checkpoint")
shutil.copy(os.path.join(folder, "2.npz"), os.path.join(folder, "007.npz"))
p = train("--epochs", "4", "--seed", "5", "--resume", out=whole, check=0)
for expect in ["3.npz' is damaged", "3.npz.damaged", leftover, "ignoring '007.npz'"]:
    if expect not in p.stderr:
        fail(f"resume over a damaged checkpoint: stderr does not say '{expect}'", p.stderr)
if not os.path.exists(os.path.join(folder, "3.npz.damaged")) or os.path.exists(os.path.join(folder, leftover)):
    fail("the damaged checkpoint was not kept aside, or the leftover not removed", os.listdir(folder))
if summary(whole)["status"] != "completed" or summary(whole)["epochs_done"] != "4":
    fail("the resume from the checkpoint before the damaged one did not finish", summary(whole))
print("train_guard: all checks passed")
