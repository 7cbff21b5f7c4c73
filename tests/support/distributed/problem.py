"""The problem every distributed check solves: uneven tensors, a deterministic curved
noisy gradient, and the one-process reference run they are compared with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import mlbfgs
from mlbfgs.comm import Communicator

# Uneven tensors (200 elements): blocks of different sizes, several tensors per block.
SHAPES = [(7, 5), (13,), (3, 4, 2), (31,), (6, 6), (1,), (17, 3), (9,)]
# The distributed example's MLP (64-256-256-10, 85,002 elements): eight default blocks.
MLP_SHAPES = [(256, 64), (256,), (256, 256), (256,), (10, 256), (10,)]
STEPS = 30
SETTINGS: dict[str, Any] = {"history_size": 4, "update_every": 3, "lr": 0.05}
CHECKPOINT_STEPS = (12, 12)  # steps before the save, steps after it


def initial_params(dtype: Any = np.float32, shapes: list[Any] = SHAPES) -> list[np.ndarray]:
    return [
        np.random.default_rng([999, i]).standard_normal(s).astype(dtype)
        for i, s in enumerate(shapes)
    ]


def gradient(t: int, params: list[np.ndarray], rank: int = 0) -> list[np.ndarray]:
    """A deterministic, curved, noisy gradient; ``rank`` changes only the noise."""
    grads = []
    for i, p in enumerate(params):
        noise = np.random.default_rng([t, i, rank]).standard_normal(p.shape)
        g = (1 + i % 3) * p + 0.5 * np.tanh(p) + 0.1 * noise
        grads.append(g.astype(p.dtype))
    return grads


def run(
    comm: Communicator,
    params: list[Any],
    steps: int,
    grads_of: Callable[[int, list[Any]], list[Any]],
    **options: Any,
) -> mlbfgs.MLBFGS:
    opt = mlbfgs.MLBFGS(params, comm=comm, **{**SETTINGS, **options})
    for _ in range(steps):
        opt.step(grads_of(opt.step_count + 1, params))
    return opt


def same_bits(a: list[Any], b: list[Any], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{what}: params[{i}] differ"
