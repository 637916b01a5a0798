"""The PyTorch LeNet-5 that tools/golden/lenet.py (golden data), tools/bench/torch_lenet.py
(timings) and tools/bench/torch_train.py (end-to-end parity) use: the same two presets as distopt's nn::LeNet5, the same parameter names
(conv1.weight ... fc3.bias) and PyTorch's default initialisation, in creation order conv1, conv2,
fc1, fc2, fc3 (which fixes the weights torch.manual_seed gives).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = 100

# Output channels / features of conv1, conv2, fc1, fc2; conv2's output is 5 x 5 after pooling.
PRESETS = {
    "hsu": {"conv1": 64, "conv2": 64, "fc1": 384, "fc2": 192},
    "classic": {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84},
}


class LeNet5(nn.Module):
    """`channels` input planes; `padding` zero-pads conv1 (2 for 28 x 28 images: distopt's
    LeNet5Options::padding)."""

    def __init__(self, preset, classes=CLASSES, channels=3, padding=0):
        super().__init__()
        p = PRESETS[preset]
        self.conv1 = nn.Conv2d(channels, p["conv1"], 5, padding=padding)
        self.conv2 = nn.Conv2d(p["conv1"], p["conv2"], 5)
        self.fc1 = nn.Linear(p["conv2"] * 5 * 5, p["fc1"])
        self.fc2 = nn.Linear(p["fc1"], p["fc2"])
        self.fc3 = nn.Linear(p["fc2"], classes)

    def features(self, x):
        """Pre-pool activations (after ReLU) of both conv layers."""
        a1 = F.relu(self.conv1(x))
        a2 = F.relu(self.conv2(F.max_pool2d(a1, 2, 2)))
        return a1, a2

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)
