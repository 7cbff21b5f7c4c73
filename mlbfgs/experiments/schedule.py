"""The learning-rate schedule of the paper's experiments: cosine annealing to a floor."""

from __future__ import annotations

import math
from collections.abc import Callable


def cosine(base: float, total: int, floor_fraction: float = 0.001) -> Callable[[int], float]:
    """``lr(t)`` for 1-based step t: ``base`` at t = 1 down to ``floor_fraction * base`` at total.

    The paper anneals 0.1 to 0.0001 (Appendix A.4), i.e. ``floor_fraction = 0.001``.
    """
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    floor = floor_fraction * base

    def lr(t: int) -> float:
        progress = min(max(t - 1, 0), total - 1) / max(total - 1, 1)
        return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * progress))

    return lr


def batch_order(samples: int, batch_size: int, iterations: int, seed: int) -> list[list[int]]:
    """Indices of every mini-batch: seeded epoch-wise shuffles, shared by all optimizers."""
    import numpy as np

    if batch_size < 1 or batch_size > samples:
        raise ValueError(f"batch size must be in [1, {samples}], got {batch_size}")
    rng = np.random.default_rng(seed)
    per_epoch = samples // batch_size
    order: list[list[int]] = []
    while len(order) < iterations:
        perm = rng.permutation(samples)
        for k in range(min(per_epoch, iterations - len(order))):
            order.append(perm[k * batch_size : (k + 1) * batch_size].tolist())
    return order
