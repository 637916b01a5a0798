#!/usr/bin/python3
"""Golden LeNet-5 data for distopt's model tests (nn/), with PyTorch as the oracle.

Writes (relative to the repository root, found from this file's location), for each preset
P in {hsu, classic}:

  tests/data/lenet/P/weights/<name>.npy        float32  initial parameters (state_dict names)
  tests/data/lenet/P/input.npy                 float32  [8,3,32,32]   batch 0
  tests/data/lenet/P/labels.npy                int64    [8]           labels of batch 0
  tests/data/lenet/P/logits.npy                float64  [8,100]       logits of batch 0 at the initial weights
  tests/data/lenet/P/loss.npy                  float64  ()            mean cross-entropy of batch 0
  tests/data/lenet/P/grads/<name>.npy          float32  d loss / d parameter (float64, rounded once)
  tests/data/lenet/P/train_inputs.npy          float32  [4,8,3,32,32] batches 0..3
  tests/data/lenet/P/train_labels.npy          int64    [4,8]
  tests/data/lenet/P/trajectory_loss.npy       float64  [50]          loss at each SGD step, before the update
  tests/data/lenet/P/trajectory_logits.npy     float64  [5,8,100]     batch-0 logits after steps 10,20,30,40,50
and for hsu only:
  tests/data/lenet/hsu/loss_smoothing.npy      float64  ()            cross-entropy with label_smoothing=0.1
  tests/data/lenet/hsu/grads_smoothing/<name>.npy  float32  its gradients of fc3.weight, fc3.bias
                                                           and conv1.weight
plus
  tests/data/lenet/manifest.json               files, shapes, layer shapes, hyperparameters, protocol

The models (PyTorch state_dict names; conv: no padding, stride 1; pool: MaxPool2d(2, 2)):
  hsu     conv1 Conv2d(3,64,5) ReLU pool, conv2 Conv2d(64,64,5) ReLU pool, flatten (NCHW,
          torch.flatten(x, 1)), fc1 Linear(1600,384) ReLU, fc2 Linear(384,192) ReLU, fc3 Linear(192,100)
  classic conv1 Conv2d(3,6,5)  ReLU pool, conv2 Conv2d(6,16,5)  ReLU pool, flatten,
          fc1 Linear(400,120) ReLU, fc2 Linear(120,84) ReLU, fc3 Linear(84,100)
Loss: torch.nn.functional.cross_entropy, mean over the batch.

Protocol (everything float64, single-threaded, deterministic algorithms):
  1. Weights: torch.manual_seed(0); build the model (default PyTorch initialisation, which draws
     in float32); model.double(); every parameter is rounded to float32 and back to float64 (a
     no-op here, as the draws are float32, but it is done explicitly).  The stored float32
     weights are therefore exactly the float64 weights every computation below starts from.
  2. Data: g = torch.Generator().manual_seed(1), and in this order, for batch b = 0, 1, 2, 3:
         x_b = torch.randn([8,3,32,32], generator=g, dtype=float64), rounded to float32
         y_b = torch.randint(0, 100, [8], generator=g, dtype=int64)
     Batch 0's labels are then fixed up so that the edge cases are present:
         y_0[0] = 0, y_0[7] = 99, y_0[5] = y_0[2]   (a repeated label)
     The same data (same generator seed) is used for both presets.
  3. Batch 0 at the initial weights: logits, loss = cross_entropy(logits, y_0), backward;
     the gradients are stored rounded to float32.  For hsu also with label_smoothing=0.1
     (a fresh backward, gradients zeroed before).
  4. Trajectory: from the initial weights, torch.optim.SGD(lr=0.01, momentum=0.9,
     weight_decay=4e-4, foreach=False) (dampening 0, no Nesterov), 50 steps; step s = 1..50
     uses batch (s-1) % 4; each step: zero_grad, forward, mean cross-entropy, backward, step.
     trajectory_loss[s-1] is the loss of step s (before its update).  After steps 10, 20, 30,
     40, 50 the logits of batch 0 are evaluated (torch.no_grad) into trajectory_logits[k].

Run from the repository root with Debian's interpreter (it has torch 1.13):
    /usr/bin/python3 tools/golden/lenet.py
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lenet_torch import CLASSES, PRESETS, LeNet5  # noqa: E402  (tools/lenet_torch.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "lenet")

DT = torch.float64
BATCH = 8
NUM_BATCHES = 4
IMAGE = [3, 32, 32]
WEIGHT_SEED = 0
DATA_SEED = 1
LABEL_SMOOTHING = 0.1
SMOOTHING_GRADS = ("fc3.weight", "fc3.bias", "conv1.weight")
SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 4e-4, "dampening": 0.0, "nesterov": False}
STEPS = 50
LOGIT_STEPS = [10, 20, 30, 40, 50]

def f32(t):
    """Round a float64 tensor through float32 (the value the C++ float model will see)."""
    return t.to(torch.float32).to(DT)


def make_model(preset):
    torch.manual_seed(WEIGHT_SEED)
    model = LeNet5(preset).double()
    with torch.no_grad():
        for t in model.parameters():
            t.copy_(f32(t))
    return model


def make_data():
    g = torch.Generator().manual_seed(DATA_SEED)
    xs, ys = [], []
    for b in range(NUM_BATCHES):
        xs.append(f32(torch.randn([BATCH] + IMAGE, generator=g, dtype=DT)))
        ys.append(torch.randint(0, CLASSES, [BATCH], generator=g, dtype=torch.int64))
    y0 = ys[0]
    y0[0] = 0
    y0[7] = 99
    y0[5] = y0[2]
    assert 0 in y0.tolist() and 99 in y0.tolist() and len(set(y0.tolist())) < BATCH
    return torch.stack(xs), torch.stack(ys)


# --------------------------------------------------------------------------------------------
# Output helpers; every written file is recorded for the manifest.
# --------------------------------------------------------------------------------------------
FILES = {}


def save(rel, tensor, dtype, description):
    arr = tensor.detach().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    arr = np.array(arr, dtype=dtype, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    path = os.path.join(OUT_DIR, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, arr)
    FILES[rel] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "description": description}


def save_grads(preset, folder, model, what, only=None):
    for name, p in model.named_parameters():
        if only is not None and name not in only:
            continue
        save(f"{preset}/{folder}/{name}.npy", p.grad, np.float32,
             f"d({what})/d({name}) at the initial weights, computed in float64, rounded to float32")


def loss_and_grads(model, x, y, smoothing=0.0):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    loss.backward()
    return logits.detach(), loss.detach()


def pool_diagnostics(preset, model, x):
    """How close the float64 max-pool windows come to a tie among positive values (a near-tie
    may make the float32 C++ model pick another argmax), and in how many windows a float32
    forward of the same weights picks a different argmax than float64."""
    out = {}
    m32 = LeNet5(preset).float()
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        acts64 = model.features(x)
        acts32 = m32.features(x.float())
    for name, a64, a32 in zip(("pool1", "pool2"), acts64, acts32):
        w64 = F.unfold(a64.reshape(-1, 1, *a64.shape[2:]), 2, stride=2)  # [N*C, 4, windows]
        w32 = F.unfold(a32.double().reshape(-1, 1, *a32.shape[2:]), 2, stride=2)
        top = torch.topk(w64, 2, dim=1).values
        positive = top[:, 0] > 0
        gap = (top[:, 0] - top[:, 1])[positive]
        rel = gap / top[:, 0][positive]
        differ = (w64.argmax(1) != w32.argmax(1)) & positive
        out[name] = {"windows": int(positive.numel()), "positive_max": int(positive.sum()),
                     "min_gap": float(gap.min()), "min_relative_gap": float(rel.min()),
                     "float32_argmax_differs": int(differ.sum())}
    return out


def run_trajectory(model, xs, ys, opts, steps):
    opt = torch.optim.SGD(model.parameters(), lr=opts["lr"], momentum=opts["momentum"],
                          dampening=opts["dampening"], weight_decay=opts["weight_decay"],
                          nesterov=opts["nesterov"], foreach=False)
    losses, logits = [], []
    for s in range(1, steps + 1):
        b = (s - 1) % NUM_BATCHES
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xs[b]), ys[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if s in LOGIT_STEPS:
            with torch.no_grad():
                logits.append(model(xs[0]))
    return torch.tensor(losses, dtype=DT), torch.stack(logits)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)

    xs, ys = make_data()
    x0, y0 = xs[0], ys[0]
    manifest_presets = {}
    diagnostics = {}
    for preset in PRESETS:
        model = make_model(preset)
        layers = {name: list(t.shape) for name, t in model.state_dict().items()}
        for name, t in model.state_dict().items():
            save(f"{preset}/weights/{name}.npy", t, np.float32,
                 f"initial {name} (torch.manual_seed({WEIGHT_SEED}), default init); exact as float32")
        save(f"{preset}/input.npy", x0, np.float32, "batch 0 images, normal(0,1), NCHW")
        save(f"{preset}/labels.npy", y0, np.int64,
             "batch 0 labels, with y[0]=0, y[7]=99, y[5]=y[2] forced")
        save(f"{preset}/train_inputs.npy", xs, np.float32, "batches 0..3 of the SGD trajectory")
        save(f"{preset}/train_labels.npy", ys, np.int64, "labels of batches 0..3")

        logits, loss = loss_and_grads(model, x0, y0)
        save(f"{preset}/logits.npy", logits, np.float64, "batch 0 logits at the initial weights")
        save(f"{preset}/loss.npy", loss, np.float64, "mean cross-entropy of batch 0 at the initial weights")
        save_grads(preset, "grads", model, "loss")
        print(f"{preset}: {sum(t.numel() for t in model.parameters())} parameters, "
              f"initial loss {loss.item():.10f}")
        if preset == "hsu":
            _, loss_s = loss_and_grads(model, x0, y0, LABEL_SMOOTHING)
            save(f"{preset}/loss_smoothing.npy", loss_s, np.float64,
                 f"mean cross-entropy of batch 0 with label_smoothing={LABEL_SMOOTHING}")
            # Label smoothing changes only d(loss)/d(logits); the rest of the backward pass is the
            # one checked above, so the last layer and the first (the end of the chain) suffice.
            save_grads(preset, "grads_smoothing", model, "loss_smoothing",
                       only=SMOOTHING_GRADS)
            print(f"{preset}: initial loss with label smoothing {loss_s.item():.10f}")
        model.zero_grad(set_to_none=True)
        diagnostics[preset] = pool_diagnostics(preset, model, x0)
        print(f"{preset}: max-pool ties at the initial weights: {diagnostics[preset]}")

        traj_loss, traj_logits = run_trajectory(model, xs, ys, SGD, STEPS)
        if not (torch.isfinite(traj_loss).all() and torch.isfinite(traj_logits).all()):
            sys.exit(f"{preset}: trajectory is not finite")
        save(f"{preset}/trajectory_loss.npy", traj_loss, np.float64,
             "loss at SGD step s=1..50 (row s-1), before the update; batch (s-1)%4")
        save(f"{preset}/trajectory_logits.npy", traj_logits, np.float64,
             "batch 0 logits after steps 10, 20, 30, 40, 50")
        print(f"{preset}: trajectory loss " + " ".join(f"{v:.4f}" for v in traj_loss.tolist()))
        print(f"{preset}: trajectory loss step 1 {traj_loss[0].item():.6f} -> step 50 "
              f"{traj_loss[-1].item():.6f} (min {traj_loss.min().item():.6f})")
        manifest_presets[preset] = {"layers": layers,
                                    "num_parameters": sum(t.numel() for t in model.parameters())}

    manifest = {
        "generator": f"tools/golden/lenet.py, torch {torch.__version__}, numpy {np.__version__}",
        "presets": manifest_presets,
        "architecture": ("conv1 ReLU maxpool(2,2) conv2 ReLU maxpool(2,2) flatten(NCHW) "
                         "fc1 ReLU fc2 ReLU fc3; conv 5x5 stride 1 no padding"),
        "input_shape": IMAGE,
        "classes": CLASSES,
        "loss": "torch.nn.functional.cross_entropy, reduction mean",
        "label_smoothing": {"value": LABEL_SMOOTHING, "presets": ["hsu"]},
        "weights": {"seed": WEIGHT_SEED,
                    "protocol": "torch.manual_seed(seed); default init; .double(); rounded to float32"},
        "data": {"seed": DATA_SEED, "batch": BATCH, "num_batches": NUM_BATCHES,
                 "protocol": ("g = torch.Generator().manual_seed(seed); per batch b=0..3: "
                              "x_b = randn([8,3,32,32], float64) rounded to float32, "
                              "y_b = randint(0,100,[8]); then y_0[0]=0, y_0[7]=99, y_0[5]=y_0[2]"),
                 "same_for_all_presets": True},
        "trajectory": {"optimizer": "torch.optim.SGD", "options": dict(SGD, foreach=False),
                       "steps": STEPS, "batch_order": "step s=1..N uses batch (s-1) % 4",
                       "step": "zero_grad, forward, mean cross-entropy, backward, step",
                       "loss": "trajectory_loss[s-1] = loss of step s, before its update",
                       "logits_after_steps": LOGIT_STEPS, "logits_batch": 0},
        "precision": "all computations float64; float32 files are rounded once at the end",
        "maxpool_diagnostics_initial_batch0": diagnostics,
        "files": FILES,
    }
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as f:
        json.dump(manifest, f, sort_keys=True, indent=1)
        f.write("\n")

    total = sum(os.path.getsize(os.path.join(d, n))
                for d, _, names in os.walk(OUT_DIR) for n in names)
    print(f"{len(FILES) + 1} files, {total} bytes ({total / 1e6:.2f} MB) under {OUT_DIR}")


if __name__ == "__main__":
    main()
