"""The demo's small networks (torch): a CNN for images, sized for a 2-core laptop."""

from __future__ import annotations

import torch
from torch import nn


def small_cnn(
    channels: int, height: int, width: int, classes: int, width_mult: int = 1
) -> nn.Module:
    """conv-relu-conv-relu-pool-linear-relu-linear; works for 8x8 digits up to 32x32 CIFAR."""
    c1, c2, hidden = 16 * width_mult, 32 * width_mult, 64 * width_mult
    pool = 2 if min(height, width) < 16 else 4
    features = c2 * (height // pool) * (width // pool)
    return nn.Sequential(
        nn.Conv2d(channels, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(pool),
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def seeded_model(shape: tuple[int, int, int], classes: int, seed: int) -> nn.Module:
    """The same initial weights for every optimizer of a comparison."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return small_cnn(*shape, classes)
