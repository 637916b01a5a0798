#!/usr/bin/python3
"""Golden optimizer trajectories for distopt's optimizer tests, with PyTorch as the oracle.

Writes (relative to the repository root, found from this file's location):

  tests/data/optim/w0.npy        [143] float64  initial weights (values exactly representable in float32)
  tests/data/optim/a.npy         [143] float64  curvature of the synthetic gradient (float32-representable)
  tests/data/optim/c.npy         [143] float64  centre of the synthetic gradient (float32-representable)
  tests/data/optim/<config>.npy  [STEPS+1, 143] float64  row 0 = w0, row t = weights after step t
  tests/data/optim/manifest.json blocks, steps, gradient formula and the configurations

The 143 weights are three blocks, concatenated in this order:
  conv.weight [4,3,3,3] (108), fc.weight [5,6] (30), fc.bias [5] (5).
At every step the gradient is computed from the CURRENT weights,
  g = a*(w - c) + 0.1*w**3        (elementwise, float64)
set as .grad, and the optimizer steps, so errors compound over the trajectory.

SGDM and AdamW are torch.optim.SGD / torch.optim.AdamW themselves (float64, foreach=False,
one parameter group per block).  LARS and LAMB are not in torch.optim; they are written below
from their equations with float64 torch ops (see run_lars / run_lamb).

Everything is float64 with fixed seeds and runs single-threaded, so the output files are
byte-identical on every run.

Run from the repository root with Debian's interpreter (it has torch):
    /usr/bin/python3 tools/golden/optimizers.py
"""

import json
import math
import os
import sys

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "optim")

STEPS = 100
DT = torch.float64

BLOCKS = [
    ("conv.weight", [4, 3, 3, 3]),
    ("fc.weight", [5, 6]),
    ("fc.bias", [5]),
]
SIZES = [math.prod(shape) for _, shape in BLOCKS]
N = sum(SIZES)  # 143
OFFSETS = [sum(SIZES[:i]) for i in range(len(SIZES))]

# ---------------------------------------------------------------------------------------------
# Configurations.  "options" uses the C++ option field names and lists only what the config sets;
# everything else takes the documented default (DEFAULTS below, which the Python LARS/LAMB use
# too).  "block_overrides" maps a block name to {"lr_scale": float, "decay": bool, "adapt": bool}.
# ---------------------------------------------------------------------------------------------
LAMB_BASE = {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01,
             "bias_correction": True}
LARS_BASE = {"lr": 0.1, "momentum": 0.9, "trust_coefficient": 0.001, "eps": 1e-8,
             "weight_decay": 0.001}

CONFIGS = [
    ("sgdm_plain", "sgdm", {"lr": 0.05, "momentum": 0.0}, {}),
    ("sgdm_momentum", "sgdm", {"lr": 0.05, "momentum": 0.9}, {}),
    ("sgdm_nesterov", "sgdm", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, {}),
    ("sgdm_dampening", "sgdm", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}, {}),
    ("sgdm_weight_decay", "sgdm", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, {}),
    ("sgdm_block_overrides", "sgdm", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
     {"fc.bias": {"lr_scale": 0.5, "decay": False}}),
    ("adamw_default", "adamw",
     {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}, {}),
    ("adamw_amsgrad", "adamw",
     {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "amsgrad": True}, {}),
    ("adamw_no_decay", "adamw", {"lr": 0.01, "weight_decay": 0.0}, {}),
    ("lars_default", "lars", dict(LARS_BASE), {}),
    ("lars_trust_clip", "lars",
     {"lr": 0.1, "momentum": 0.9, "trust_coefficient": 0.02, "weight_decay": 0.001,
      "trust_clip": True}, {}),
    ("lars_nesterov", "lars",
     {"lr": 0.1, "momentum": 0.9, "trust_coefficient": 0.001, "weight_decay": 0.001,
      "nesterov": True}, {}),
    ("lars_no_exclusions", "lars", dict(LARS_BASE), {"fc.bias": {"adapt": True, "decay": True}}),
    ("lamb_default", "lamb", dict(LAMB_BASE), {}),
    ("lamb_no_bias_correction", "lamb", dict(LAMB_BASE, bias_correction=False), {}),
    ("lamb_phi_bounds", "lamb", dict(LAMB_BASE, phi_min=0.5, phi_max=1.0), {}),
    ("lamb_grad_clipping", "lamb", dict(LAMB_BASE, max_grad_norm=1.0), {}),
    # Extra configs beyond the required list, so that both sides of a branch are exercised:
    # max_grad_norm 1.0 clips at every step (||g|| >= 4.2 throughout); 6.0 clips at the first
    # 62 steps and not at the last 38 (closest ||g|| to 6.0 is 0.016 away).
    ("lamb_grad_clipping_partial", "lamb", dict(LAMB_BASE, max_grad_norm=6.0), {}),
    # lamb_phi_bounds only ever hits phi_max (adapted block norms stay in [2.4, 5.8]).  Here
    # phi_min 4.0 lifts fc.weight at every step (||w|| in [1.5, 3.3]) while conv.weight goes
    # from unclipped (||w|| 5.7 down to 4) to clipped (53 of 100 steps below 4.0; closest
    # ||w|| to 4.0 is 0.012 away); phi_max stays at its default (infinity).
    ("lamb_phi_min", "lamb", dict(LAMB_BASE, phi_min=4.0), {}),
    ("lamb_no_exclusions", "lamb", dict(LAMB_BASE), {"fc.bias": {"adapt": True, "decay": True}}),
]

# Defaults of the C++ options (and of the Python LARS/LAMB below).
DEFAULTS = {
    "sgdm": {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
    "adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
    "lars": {"momentum": 0.9, "trust_coefficient": 0.001, "eps": 1e-8, "weight_decay": 0.0,
             "nesterov": False, "trust_clip": False},
    "lamb": {"betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01, "bias_correction": True,
             "phi_min": 0.0, "phi_max": math.inf, "max_grad_norm": 0.0},
}


def uniform_f32_rounded(seed, lo, hi):
    """N values uniform in [lo, hi) from torch.Generator(seed), rounded through float32."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(N, generator=gen, dtype=DT) * (hi - lo) + lo
    return x.to(torch.float32).to(DT)


def split(flat):
    """Flat [143] tensor -> list of per-block tensors (fresh, contiguous, with the block shape)."""
    return [flat[o:o + s].clone().reshape(shape)
            for o, s, (_, shape) in zip(OFFSETS, SIZES, BLOCKS)]


def flatten(params):
    return torch.cat([p.detach().reshape(-1) for p in params])


def block_settings(kind, overrides):
    """Per-block (lr_scale, decay, adapt).  For LARS/LAMB, 1-D blocks default to no decay and
    no adaptation; for SGDM/AdamW every block decays.  Overrides replace the defaults."""
    out = []
    for name, shape in BLOCKS:
        one_d = len(shape) == 1
        s = {"lr_scale": 1.0,
             "decay": not (one_d and kind in ("lars", "lamb")),
             "adapt": not one_d}
        s.update(overrides.get(name, {}))
        out.append(s)
    return out


class Problem:
    def __init__(self, a, c):
        self.a = split(a)
        self.c = split(c)

    def grads(self, params):
        # g = a*(w - c) + 0.1*w^3, from the current weights
        return [a * (w.detach() - c) + 0.1 * w.detach() ** 3
                for w, a, c in zip(params, self.a, self.c)]


def run_torch(kind, opts, overrides, w0, problem):
    params = [p.requires_grad_(True) for p in split(w0)]
    settings = block_settings(kind, overrides)
    full = dict(DEFAULTS[kind], **opts)
    groups = []
    for p, s in zip(params, settings):
        g = {"params": [p], "lr": opts["lr"] * s["lr_scale"]}
        if not s["decay"]:
            g["weight_decay"] = 0.0
        groups.append(g)
    if kind == "sgdm":
        opt = torch.optim.SGD(groups, lr=opts["lr"], momentum=full["momentum"],
                              dampening=full["dampening"], weight_decay=full["weight_decay"],
                              nesterov=full["nesterov"], foreach=False)
    else:
        opt = torch.optim.AdamW(groups, lr=opts["lr"], betas=tuple(full["betas"]),
                                eps=full["eps"], weight_decay=full["weight_decay"],
                                amsgrad=full["amsgrad"], foreach=False)
    rows = [flatten(params)]
    for _ in range(STEPS):
        for p, g in zip(params, problem.grads(params)):
            p.grad = g
        opt.step()
        rows.append(flatten(params))
    return torch.stack(rows)


def run_lars(opts, overrides, w0, problem):
    """LARS (You, Gitman, Ginsburg 2017), trust clipping as in NVIDIA apex LARC.

    Per block b, with wd_b = weight_decay if decay else 0 and lr_b = lr * lr_scale:
        if adapt:
            wn = ||w||, gn = ||g||
            trust = eta * wn / (gn + wd_b * wn + eps)   if wn > 0 and gn > 0, else 1
            if trust_clip: trust = min(trust / lr_b, 1)          (LARC "clip" mode)
        else:
            trust = 1
        d   = (g + wd_b * w) * trust
        buf = d on the first step, else momentum * buf + d      (torch SGD, dampening 0)
        d   = d + momentum * buf  if nesterov  else  buf
        w   = w - lr_b * d
    """
    o = dict(DEFAULTS["lars"], **opts)
    lr, mu, eta, eps, wd = o["lr"], o["momentum"], o["trust_coefficient"], o["eps"], o["weight_decay"]
    settings = block_settings("lars", overrides)
    params = split(w0)
    bufs = [None] * len(params)
    rows = [flatten(params)]
    for _ in range(STEPS):
        grads = problem.grads(params)
        for i, (w, g, s) in enumerate(zip(params, grads, settings)):
            wd_b = wd if s["decay"] else 0.0
            lr_b = lr * s["lr_scale"]
            if s["adapt"]:
                wn = torch.linalg.vector_norm(w).item()
                gn = torch.linalg.vector_norm(g).item()
                trust = eta * wn / (gn + wd_b * wn + eps) if (wn > 0.0 and gn > 0.0) else 1.0
                if o["trust_clip"]:
                    trust = min(trust / lr_b, 1.0)
            else:
                trust = 1.0
            d = (g + wd_b * w) * trust
            if mu != 0.0:
                if bufs[i] is None:
                    bufs[i] = d.clone()
                else:
                    bufs[i] = mu * bufs[i] + d
                d = d + mu * bufs[i] if o["nesterov"] else bufs[i]
            params[i] = w - lr_b * d
        rows.append(flatten(params))
    return torch.stack(rows)


def run_lamb(opts, overrides, w0, problem):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2).

    Step t = 1, 2, ...; moments m, v start at 0.
        if max_grad_norm > 0:                       (global clipping, before the moments)
            total = ||g|| over ALL blocks;  if total > max_grad_norm: g = g * (max_grad_norm / total)
        m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
        mh, vh = m/(1-b1^t), v/(1-b2^t)  if bias_correction  else  m, v
        r = mh / (sqrt(vh) + eps);  u = r + wd_b*w
        per block:  if adapt:  wn = ||w|| (before the update); phi = min(max(wn, phi_min), phi_max)
                               un = ||u||; ratio = phi/un if wn > 0 and un > 0 else 1
                    else:      ratio = 1
        w = w - lr_b * ratio * u
    with wd_b = weight_decay if decay else 0 and lr_b = lr * lr_scale.
    """
    o = dict(DEFAULTS["lamb"], **opts)
    lr, (b1, b2), eps, wd = o["lr"], o["betas"], o["eps"], o["weight_decay"]
    settings = block_settings("lamb", overrides)
    params = split(w0)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    rows = [flatten(params)]
    for t in range(1, STEPS + 1):
        grads = problem.grads(params)
        if o["max_grad_norm"] > 0.0:
            total = math.sqrt(sum(torch.sum(g * g).item() for g in grads))
            if total > o["max_grad_norm"]:
                grads = [g * (o["max_grad_norm"] / total) for g in grads]
        for i, (w, g, s) in enumerate(zip(params, grads, settings)):
            wd_b = wd if s["decay"] else 0.0
            lr_b = lr * s["lr_scale"]
            m[i] = b1 * m[i] + (1.0 - b1) * g
            v[i] = b2 * v[i] + (1.0 - b2) * g * g
            if o["bias_correction"]:
                mh = m[i] / (1.0 - b1 ** t)
                vh = v[i] / (1.0 - b2 ** t)
            else:
                mh, vh = m[i], v[i]
            r = mh / (torch.sqrt(vh) + eps)
            u = r + wd_b * w
            if s["adapt"]:
                wn = torch.linalg.vector_norm(w).item()
                phi = min(max(wn, o["phi_min"]), o["phi_max"])
                un = torch.linalg.vector_norm(u).item()
                ratio = phi / un if (wn > 0.0 and un > 0.0) else 1.0
            else:
                ratio = 1.0
            params[i] = w - lr_b * ratio * u
        rows.append(flatten(params))
    return torch.stack(rows)


def save(name, tensor):
    arr = np.ascontiguousarray(tensor.detach().numpy().astype(np.float64))
    np.save(os.path.join(OUT_DIR, name + ".npy"), arr)


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)

    w0 = uniform_f32_rounded(0, -1.0, 1.0)
    a = uniform_f32_rounded(1, 0.5, 2.0)
    c = uniform_f32_rounded(2, -0.5, 0.5)
    save("w0", w0)
    save("a", a)
    save("c", c)
    problem = Problem(a, c)

    manifest_configs = []
    for name, kind, opts, overrides in CONFIGS:
        if kind in ("sgdm", "adamw"):
            traj = run_torch(kind, opts, overrides, w0, problem)
        elif kind == "lars":
            traj = run_lars(opts, overrides, w0, problem)
        else:
            traj = run_lamb(opts, overrides, w0, problem)
        assert traj.shape == (STEPS + 1, N)
        assert torch.equal(traj[0], w0)
        if not torch.isfinite(traj).all():
            sys.exit(f"{name}: trajectory is not finite")
        moved = (traj[-1] - w0).abs().max().item()
        per_block = [(traj[-1, o:o + s] - w0[o:o + s]).abs().max().item()
                     for o, s in zip(OFFSETS, SIZES)]
        if moved <= 1e-2:
            sys.exit(f"{name}: weights barely move (max |w_T - w0| = {moved:.3g})")
        print(f"{name:26s} max|w_T-w0| = {moved:.4f}  per block "
              + " ".join(f"{x:.4f}" for x in per_block)
              + f"  max|w| = {traj.abs().max().item():.3f}")
        save(name, traj)
        manifest_configs.append({"name": name, "optimizer": kind, "options": opts,
                                 "block_overrides": overrides})

    manifest = {
        "blocks": [{"name": n, "shape": s} for n, s in BLOCKS],
        "steps": STEPS,
        "grad": "a*(w-c)+0.1*w^3",
        "configs": manifest_configs,
    }
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as f:
        json.dump(manifest, f, sort_keys=True, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
