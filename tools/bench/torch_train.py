#!/usr/bin/python3
"""End-to-end parity with PyTorch: stage 2's LeNet-5 run trained again in PyTorch, beside distopt's.

For each seed S it loads the initial weights distopt saved (results/stage2_lenet/init_seedS.npz,
state_dict names), the same prepared split distopt trained on (the cache folder stage 1 wrote:
out/prepared/<key>/prepared.npz, with the arrays {train,validation,test}_{images,fine} and the
train split's mean and std), and trains with the hyperparameters of stage 2's summary.csv row of that seed: SGD
(lr, momentum, weight decay as PyTorch's L2 term, the same as distopt's Sgdm), batch 64, constant
lr, the same epochs, random horizontal flips (p = 0.5 per image, the study's augmentation for
28 x 28 images), the loss averaged over the batch. Validation after every epoch; the test set is
evaluated once with the best-validation weights, as distopt's run_training does. The data order
is PyTorch's own (torch.Generator seeded with S): the runs agree in distribution, not bit for bit.

    /usr/bin/python3 tools/bench/torch_train.py --results results --prepared out/prepared/idx-fashion-mnist-subset30000 \
        [--seeds 0 1 2] [--threads 2] [-o results/parity.md]

Prints (and with -o writes) a markdown table: test accuracy over the seeds (mean and range) and
training images per second of each implementation, and the difference of the means. Run
`stage2_lenet --seeds 3` first (same --results and --work as here). Needs Debian's python3-torch.
"""

import argparse
import csv
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lenet_torch import LeNet5  # noqa: E402  (tools/lenet_torch.py, distopt's nn::LeNet5 with the same layer names)


def load_split(prepared, name, mean, std):
    images = prepared[f"{name}_images"]
    labels = prepared[f"{name}_fine"].astype(np.int64)
    if images.ndim == 3:
        images = images[:, None]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = (x - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)) / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.contiguous(), torch.from_numpy(labels)


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x)


def train_one(seed, row, init, data, flip):
    (xtr, ytr), (xva, yva), (xte, yte) = data
    state = {k: torch.from_numpy(np.array(v)) for k, v in np.load(init).items()}
    preset = "classic" if state["conv1.weight"].shape[0] == 6 else "hsu"
    channels = state["conv1.weight"].shape[1]
    padding = 2 if xtr.shape[-1] == 28 else 0
    model = LeNet5(preset, classes=state["fc3.weight"].shape[0], channels=channels, padding=padding)
    model.load_state_dict(state)
    lr, momentum, wd = float(row["lr"]), float(row["momentum"]), float(row["weight_decay"])
    batch, epochs = int(row["batch_size"]), int(row["epochs"])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    g = torch.Generator().manual_seed(seed)
    best, best_state, seconds = -1.0, None, 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            x = xtr[idx]
            if flip:
                mirror = torch.rand(len(idx), generator=g) < 0.5
                x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), ytr[idx]).backward()
            opt.step()
        seconds += time.perf_counter() - start
        val = evaluate(model, xva, yva)
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"  torch seed {seed} epoch {epoch + 1}/{epochs}  val acc {val:.4f}", flush=True)
    model.load_state_dict(best_state)
    return evaluate(model, xte, yte), epochs * len(xtr) / seconds


def summary(values):
    mean = sum(values) / len(values)
    return f"{100 * mean:.2f} ({100 * min(values):.2f}-{100 * max(values):.2f}, {len(values)} seeds)", mean


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="the study's results folder (holds stage2_lenet/)")
    parser.add_argument("--prepared", required=True, help="the prepared-data cache folder of the same configuration")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("-o", "--output", help="also write the table here (markdown)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stage2 = os.path.join(args.results, "stage2_lenet")
    try:
        with open(os.path.join(stage2, "summary.csv"), newline="", encoding="utf-8") as f:
            rows = {int(r["seed"]): r for r in csv.DictReader(f)}
        with np.load(os.path.join(args.prepared, "prepared.npz")) as prepared:
            mean, std = prepared["mean"], prepared["std"]
            data = [load_split(prepared, name, mean, std) for name in ("train", "validation", "test")]
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"torch_train.py: {e}")
    missing = [s for s in args.seeds if s not in rows]
    if missing:
        sys.exit(f"torch_train.py: {stage2}/summary.csv has no row for seed(s) {missing}: run stage2_lenet --seeds {len(args.seeds)}")
    flip = data[0][0].shape[-1] == 28  # the study's augmentation for 28 x 28 images; CIFAR's crop is not reproduced here
    if not flip:
        sys.exit("torch_train.py: only the 28 x 28 data (horizontal flip) is supported")

    torch_acc, torch_speed, ours_acc, ours_speed = [], [], [], []
    for seed in args.seeds:
        acc, speed = train_one(seed, rows[seed], os.path.join(stage2, f"init_seed{seed}.npz"), data, flip)
        torch_acc.append(acc)
        torch_speed.append(speed)
        ours_acc.append(float(rows[seed]["test_accuracy"]))
        ours_speed.append(float(rows[seed]["images_per_second"]))
        print(f"seed {seed}: PyTorch {100 * acc:.2f}%  distopt {100 * ours_acc[-1]:.2f}%", flush=True)
    t_text, t_mean = summary(torch_acc)
    o_text, o_mean = summary(ours_acc)
    row = rows[args.seeds[0]]
    table = (f"Stage 2's run ({row['epochs']} epochs, SGDM lr {row['lr']}, momentum {row['momentum']}, weight decay "
             f"{row['weight_decay']}, batch {row['batch_size']}, horizontal flip; best-validation weights tested) in PyTorch "
             f"{torch.__version__} and distopt from the same initial weights on the same split, {torch.get_num_threads()} threads.\n\n"
             "| implementation | test accuracy % (mean, range) | training images/s (mean) |\n|---|---|---|\n"
             f"| distopt | {o_text} | {sum(ours_speed) / len(ours_speed):.0f} |\n"
             f"| PyTorch | {t_text} | {sum(torch_speed) / len(torch_speed):.0f} |\n\n"
             f"Difference of the means (distopt - PyTorch): {100 * (o_mean - t_mean):+.2f} points; target: within 0.5 points "
             f"({'met' if abs(o_mean - t_mean) <= 0.005 else 'NOT met'}).\n")
    print("\n" + table)
    if args.output:
        temp = args.output + ".tmp"
        with open(temp, "w", encoding="utf-8") as f:
            f.write(table)
        os.replace(temp, args.output)
    return 0 if math.isfinite(t_mean) else 1


if __name__ == "__main__":
    sys.exit(main())
