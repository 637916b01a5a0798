#!/usr/bin/python3
"""Golden data for distopt's nn::Sequential (tests/nn/test_sequential.cpp), with PyTorch as the oracle.

Writes (relative to the repository root, found from this file's location), for each case C:

  tests/data/sequential/C/weights/<name>.npy     float32  initial parameters (nn.Sequential state_dict names)
  tests/data/sequential/C/input.npy              float32  [batch, *input_shape]
  tests/data/sequential/C/targets.npy            int64 [batch] class ids, or float32 [batch, outputs] values
  tests/data/sequential/C/outputs.npy            float64  [batch, outputs] at the initial weights
  tests/data/sequential/C/loss.npy               float64  ()  mean loss at the initial weights
  tests/data/sequential/C/grads/<name>.npy       float64  d loss / d parameter at the initial weights
  tests/data/sequential/C/trajectory_loss.npy    float64  [10]  loss of each SGD step, before its update
  tests/data/sequential/C/trajectory_outputs.npy float64  [batch, outputs] after the 10 steps
and for the mlp case also
  tests/data/sequential/mlp/loss_smoothing.npy   float64  ()  cross-entropy with label_smoothing=0.1
  tests/data/sequential/mlp/grads_smoothing/<name>.npy  float64  its gradients
plus
  tests/data/sequential/manifest.json            cases, layers (torch and distopt spellings), files, protocol

The cases:
  mlp         input [13]: Linear(13,16) ReLU Linear(16,8) Tanh Linear(8,3); cross-entropy; batch 6
  regression  input [5]:  Linear(5,8) Tanh Linear(8,2); mean squared error; batch 7
  cnn         input [1,12,12]: Conv2d(1,4,3,padding=1) ReLU MaxPool2d(2) Conv2d(4,6,3) ReLU
              MaxPool2d(2) Flatten Linear(24,3); cross-entropy; batch 4

Protocol (everything float64, single-threaded, deterministic algorithms):
  1. Weights: torch.manual_seed(seed of the case); build the torch.nn.Sequential (default
     initialisation, drawn in float32); .double(); every parameter rounded to float32 and back
     (a no-op, done explicitly). The stored float32 weights are exactly the float64 weights every
     computation starts from.
  2. Data: g = torch.Generator().manual_seed(data seed of the case); x = randn([batch, *input],
     float64) rounded to float32; class ids = randint(0, outputs, [batch]) with y[0] = 0 and
     y[-1] = outputs - 1 forced, or values = randn([batch, outputs]) rounded to float32.
  3. Outputs, loss (F.cross_entropy or F.mse_loss, mean), backward; for mlp also with
     label_smoothing=0.1 (gradients zeroed before).
  4. Trajectory: torch.optim.SGD(lr=0.1) (no momentum, no weight decay), 10 steps on the same
     batch; each step zero_grad, forward, loss, backward, step; trajectory_loss[s-1] is the loss of
     step s before its update; trajectory_outputs the outputs after step 10.

Run from anywhere with Debian's interpreter (python3-torch):
    /usr/bin/python3 tools/golden/sequential.py
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "sequential")

DT = torch.float64
LABEL_SMOOTHING = 0.1
SGD_LR = 0.1
STEPS = 10

CASES = {
    "mlp": {
        "input": [13], "batch": 6, "loss": "cross_entropy", "weight_seed": 3, "data_seed": 4,
        "torch": lambda: nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)),
        "distopt": "linear(16), relu(), linear(8), tanh(), linear(3)",
    },
    "regression": {
        "input": [5], "batch": 7, "loss": "mse", "weight_seed": 5, "data_seed": 6,
        "torch": lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)),
        "distopt": "linear(8), tanh(), linear(2)",
    },
    "cnn": {
        "input": [1, 12, 12], "batch": 4, "loss": "cross_entropy", "weight_seed": 7, "data_seed": 8,
        "torch": lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                       nn.Conv2d(4, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                       nn.Linear(24, 3)),
        "distopt": ("conv2d(4, 3, 1), relu(), maxpool2d(), conv2d(6, 3), relu(), maxpool2d(), flatten(), "
                    "linear(3)"),
    },
}


def f32(t):
    """Round a float64 tensor through float32 (the value the C++ float model sees)."""
    return t.to(torch.float32).to(DT)


FILES = {}


def save(rel, tensor, dtype, description):
    arr = tensor.detach().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    arr = np.array(arr, dtype=dtype, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    path = os.path.join(OUT_DIR, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, arr)
    FILES[rel] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "description": description}


def make_model(case):
    torch.manual_seed(case["weight_seed"])
    model = case["torch"]().double()
    with torch.no_grad():
        for t in model.parameters():
            t.copy_(f32(t))
    return model


def make_data(case, outputs):
    g = torch.Generator().manual_seed(case["data_seed"])
    x = f32(torch.randn([case["batch"]] + case["input"], generator=g, dtype=DT))
    if case["loss"] == "cross_entropy":
        y = torch.randint(0, outputs, [case["batch"]], generator=g, dtype=torch.int64)
        y[0] = 0
        y[-1] = outputs - 1
    else:
        y = f32(torch.randn([case["batch"], outputs], generator=g, dtype=DT))
    return x, y


def loss_of(case, outputs, y, smoothing=0.0):
    if case["loss"] == "cross_entropy":
        return F.cross_entropy(outputs, y, label_smoothing=smoothing)
    return F.mse_loss(outputs, y)


def pool_gaps(model, x):
    """The smallest gap between the largest and second largest value of a max-pool window whose
    largest is positive (a near-tie could make a float32 model pick another position; windows of
    zeros after a ReLU pass no gradient whichever position wins)."""
    gaps = []
    a = x
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.MaxPool2d):
                windows = F.unfold(a.reshape(-1, 1, *a.shape[2:]), 2, stride=2)  # [N*C, 4, windows]
                top = torch.topk(windows, 2, dim=1).values
                positive = top[:, 0] > 0
                gaps.append(float((top[:, 0] - top[:, 1])[positive].min()))
            a = layer(a)
    return gaps


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    manifest_cases = {}
    for name, case in CASES.items():
        model = make_model(case)
        outputs = model(torch.zeros([1] + case["input"], dtype=DT)).shape[1]
        x, y = make_data(case, outputs)
        for pname, t in model.state_dict().items():
            save(f"{name}/weights/{pname}.npy", t, np.float32,
                 f"initial {pname} (torch.manual_seed({case['weight_seed']}), default init); exact as float32")
        save(f"{name}/input.npy", x, np.float32, f"inputs [batch, *{case['input']}], normal(0, 1)")
        if case["loss"] == "cross_entropy":
            save(f"{name}/targets.npy", y, np.int64, "class ids, y[0] = 0 and y[-1] = outputs - 1 forced")
        else:
            save(f"{name}/targets.npy", y, np.float32, "real targets [batch, outputs], normal(0, 1)")

        model.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_of(case, out, y)
        loss.backward()
        save(f"{name}/outputs.npy", out, np.float64, "outputs at the initial weights")
        save(f"{name}/loss.npy", loss, np.float64, f"mean {case['loss']} at the initial weights")
        for pname, p in model.named_parameters():
            save(f"{name}/grads/{pname}.npy", p.grad, np.float64, f"d(loss)/d({pname}) at the initial weights")
        print(f"{name}: {sum(t.numel() for t in model.parameters())} parameters, loss {loss.item():.10f}")

        if name == "mlp":
            model.zero_grad(set_to_none=True)
            loss_s = loss_of(case, model(x), y, LABEL_SMOOTHING)
            loss_s.backward()
            save(f"{name}/loss_smoothing.npy", loss_s, np.float64,
                 f"mean cross-entropy with label_smoothing={LABEL_SMOOTHING}")
            for pname, p in model.named_parameters():
                save(f"{name}/grads_smoothing/{pname}.npy", p.grad, np.float64,
                     f"d(loss_smoothing)/d({pname}) at the initial weights")
            print(f"{name}: loss with label smoothing {loss_s.item():.10f}")
        gaps = pool_gaps(model, x)

        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad(set_to_none=True)
            step_loss = loss_of(case, model(x), y)
            step_loss.backward()
            opt.step()
            losses.append(step_loss.item())
        with torch.no_grad():
            final = model(x)
        traj = torch.tensor(losses, dtype=DT)
        if not (torch.isfinite(traj).all() and torch.isfinite(final).all()):
            sys.exit(f"{name}: trajectory is not finite")
        save(f"{name}/trajectory_loss.npy", traj, np.float64, "loss of SGD step s=1..10 (row s-1), before its update")
        save(f"{name}/trajectory_outputs.npy", final, np.float64, "outputs after the 10 steps")
        print(f"{name}: trajectory " + " ".join(f"{v:.6f}" for v in losses))

        manifest_cases[name] = {
            "input_shape": case["input"], "batch": case["batch"], "outputs": outputs, "loss": case["loss"],
            "torch": repr(case["torch"]()), "distopt": case["distopt"],
            "state_dict": {k: list(t.shape) for k, t in model.state_dict().items()},
            "weight_seed": case["weight_seed"], "data_seed": case["data_seed"],
            "maxpool_min_gap_initial": gaps,
        }

    manifest = {
        "generator": f"tools/golden/sequential.py, torch {torch.__version__}, numpy {np.__version__}",
        "cases": manifest_cases,
        "label_smoothing": {"value": LABEL_SMOOTHING, "cases": ["mlp"]},
        "trajectory": {"optimizer": "torch.optim.SGD", "lr": SGD_LR, "steps": STEPS, "batch": "the same batch every step"},
        "precision": "all computations float64; weights and inputs are exact float32 values",
        "files": FILES,
    }
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as f:
        json.dump(manifest, f, sort_keys=True, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(OUT_DIR) for n in names)
    print(f"{len(FILES) + 1} files, {total} bytes under {OUT_DIR}")


if __name__ == "__main__":
    main()
