#!/usr/bin/python3
"""Golden learning-rate schedules for distopt's scheduler tests, with torch.optim.lr_scheduler as
the oracle.

Writes (relative to the repository root, found from this file's location):

  tests/data/optim/schedules.json
      {"cases": [{"name", "kind", "params", "lrs"}, ...]}
      kind is one of cosine, step, multistep, polynomial, warmup_cosine, warmup_multistep;
      params holds every parameter including the base lr; lrs[i] is the lr the optimizer uses
      at step i (read from optimizer.param_groups[0]["lr"] before the i-th scheduler.step()),
      for i = 0 .. N-1.

Each case builds a dummy torch.optim.SGD with base lr 0.1 and the scheduler, then records
the lr.  Floats are written by json (repr, shortest round-trip), sort_keys=True, indent=1, so
the file is byte-identical on every run.

Run from the repository root with Debian's interpreter (it has torch 1.13):
    /usr/bin/python3 tools/golden/schedules.py

Behaviour of torch 1.13 worth knowing when matching these numbers
------------------------------------------------------------------
* Schedulers compute lr RECURSIVELY from the previous group lr (get_lr), not in closed form,
  so values differ from the closed forms by a few ulps (the closed-form lr is NOT bit-exact
  with torch; compare with a relative tolerance of ~1e-12).  The differences are measured and
  printed by this script.
* CosineAnnealingLR past T_max does not stay at eta_min: it continues the cosine (period
  2*T_max) and rises again, lr(t) = eta_min + (base-eta_min)*(1+cos(pi*t/T_max))/2 for all t.
  The "cosine_past_tmax" case (T_max=50, N=60) records this: lr[50] = eta_min, lr[51..59]
  rise again (mirror image of lr[49..41]).
* PolynomialLR holds at 0 after total_iters: lr(t) = base*(1 - min(t, T)/T)^power.
* SequentialLR(schedulers=[LinearLR, second], milestones=[M]):
    - steps 0..M-1 are LinearLR's steps 0..M-1: base*(s + (e-s)*t/total_iters) (min'ed at
      total_iters).  With total_iters == M the warmup NEVER reaches end_factor: its last value,
      at step M-1, is base*(s + (e-s)*(M-1)/M).
    - at step M, SequentialLR calls second.step(0), which (with an epoch argument) uses the
      second scheduler's CLOSED FORM at its epoch 0, i.e. exactly base lr (0.1) for both
      CosineAnnealingLR and MultiStepLR.  There is no off-by-one: step M is the second
      scheduler's step 0, step M+k its step k (the second scheduler is "restarted").
    - from step M+1 on the second scheduler runs recursively from the group lr, so for the
      cosine case lr[M+k] = eta_min + (base-eta_min)*(1+cos(pi*k/T_max))/2 (up to ulps) and
      for MultiStepLR the milestones count from M: the drops happen at steps M+20 and M+40.
    - the step(0) call emits torch's "EPOCH_DEPRECATION_WARNING" UserWarning (harmless;
      silenced here).
  The numbers around the milestones are printed when this script runs.  As recorded:
    warmup_cosine (LinearLR 0.1 -> 1.0 over 8, milestone 8, cosine T_max 52):
      step 0: 0.010000000000000002   step 6: 0.07750000000000001
      step 7: 0.08875000000000002    (warmup stops at factor 0.8875, never 1.0)
      step 8: 0.1                    (cosine epoch 0, closed form, exact base lr)
      step 9: 0.09990877771116588    step 10: 0.09963544370490271  (cosine epochs 1, 2)
    warmup_multistep (LinearLR 0.25 -> 1.0 over 5, milestone 5, MultiStepLR [20, 40] x0.1):
      steps 0..4: 0.025 0.04000000000000001 0.05500000000000001 0.07 0.085
      steps 5..24: 0.1    steps 25..44: 0.010000000000000002    steps 45..59: 0.0010000000000000002
* Largest deviation of torch's recursive values from the closed forms (relative to the value):
  3.6e-14 in "cosine" (T_max=40, eta_min=0) at step 43, after the lr passed through exactly 0.0
  at step 40 and the recursion restarted from 0; everything else <= 8e-16.  StepLR and
  MultiStepLR values are bit-equal to base*gamma**k for these cases (torch multiplies the
  current lr by gamma at each milestone; pow gives the same doubles here).
"""

import json
import math
import os
import warnings

import torch
from torch.optim import lr_scheduler as S

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(REPO_ROOT, "tests", "data", "optim", "schedules.json")

BASE_LR = 0.1
N = 60


def record(make, n):
    """lr used at steps 0..n-1 of the scheduler built by make(optimizer)."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=BASE_LR)
    sched = make(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no grad: a no-op, but keeps torch's "step order" check quiet
        sched.step()
    return lrs


def closed_form(kind, params, t):
    """Reference closed forms, used only to report how far torch's recursive values are."""
    b = params["base_lr"]
    if kind == "cosine":
        lo, T = params["eta_min"], params["T_max"]
        return lo + (b - lo) * (1 + math.cos(math.pi * t / T)) / 2
    if kind == "step":
        return b * params["gamma"] ** (t // params["step_size"])
    if kind == "multistep":
        return b * params["gamma"] ** sum(t >= m for m in params["milestones"])
    if kind == "polynomial":
        T = params["total_iters"]
        return b * (1 - min(t, T) / T) ** params["power"]
    M = params["milestone"]
    if t < M:
        s, e, T = params["start_factor"], params["end_factor"], params["warmup_iters"]
        return b * (s + (e - s) * min(t, T) / T)
    k = t - M
    if kind == "warmup_cosine":
        return closed_form("cosine", {"base_lr": b, "eta_min": params["eta_min"],
                                      "T_max": params["T_max"]}, k)
    return closed_form("multistep", {"base_lr": b, "gamma": params["gamma"],
                                     "milestones": params["milestones"]}, k)


def cases():
    out = []

    def add(name, kind, params, make, n=N):
        params = dict(params, base_lr=BASE_LR, steps=n)
        out.append({"name": name, "kind": kind, "params": params, "lrs": record(make, n)})

    add("cosine_past_tmax", "cosine", {"T_max": 50, "eta_min": 0.001},
        lambda o: S.CosineAnnealingLR(o, T_max=50, eta_min=0.001))
    add("cosine", "cosine", {"T_max": 40, "eta_min": 0.0},
        lambda o: S.CosineAnnealingLR(o, T_max=40, eta_min=0.0))
    add("step", "step", {"step_size": 7, "gamma": 0.5},
        lambda o: S.StepLR(o, step_size=7, gamma=0.5))
    add("multistep", "multistep", {"milestones": [10, 25, 40], "gamma": 0.2},
        lambda o: S.MultiStepLR(o, milestones=[10, 25, 40], gamma=0.2))
    add("polynomial_power2", "polynomial", {"total_iters": 45, "power": 2.0},
        lambda o: S.PolynomialLR(o, total_iters=45, power=2.0))
    add("polynomial_power1", "polynomial", {"total_iters": 45, "power": 1.0},
        lambda o: S.PolynomialLR(o, total_iters=45, power=1.0))

    def warmup_cosine(o):
        w = S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8)
        c = S.CosineAnnealingLR(o, T_max=52, eta_min=0.0)
        return S.SequentialLR(o, schedulers=[w, c], milestones=[8])

    add("warmup_cosine", "warmup_cosine",
        {"start_factor": 0.1, "end_factor": 1.0, "warmup_iters": 8, "milestone": 8,
         "T_max": 52, "eta_min": 0.0}, warmup_cosine)

    def warmup_multistep(o):
        w = S.LinearLR(o, start_factor=0.25, total_iters=5)  # end_factor default 1.0
        m = S.MultiStepLR(o, milestones=[20, 40], gamma=0.1)
        return S.SequentialLR(o, schedulers=[w, m], milestones=[5])

    add("warmup_multistep", "warmup_multistep",
        {"start_factor": 0.25, "end_factor": 1.0, "warmup_iters": 5, "milestone": 5,
         "milestones": [20, 40], "gamma": 0.1}, warmup_multistep)
    return out


def main():
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        # SequentialLR's scheduler.step(0) raises torch's epoch-deprecation UserWarning.
        warnings.simplefilter("ignore", UserWarning)
        data = {"cases": cases()}

    for case in data["cases"]:
        lrs, kind, params = case["lrs"], case["kind"], case["params"]
        rel = max(abs(x - closed_form(kind, params, t)) / BASE_LR for t, x in enumerate(lrs))
        exact = sum(x == closed_form(kind, params, t) for t, x in enumerate(lrs))
        print(f"{case['name']:18s} max|torch - closed form|/base = {rel:.2e}"
              f" ({exact}/{len(lrs)} bit-equal)")
        if "milestone" in params:
            M = params["milestone"]
            for t in range(max(0, M - 3), M + 4):
                print(f"    step {t:2d}: {lrs[t]!r:24s} closed form {closed_form(kind, params, t)!r}")
        if kind == "cosine" and params["steps"] > params["T_max"]:
            T = params["T_max"]
            for t in range(T - 2, min(T + 4, len(lrs))):
                print(f"    step {t:2d}: {lrs[t]!r}")

    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:
        json.dump(data, f, sort_keys=True, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
