"""Figure 5 of the paper on NumPy: mL-BFGS with and without momentum and damping.

The paper ablates on ResNet-18/CIFAR-10; this runs the same four variants on a small
NumPy MLP (one tanh hidden layer) trained on scikit-learn's digits with small, noisy
mini-batches, so the command needs neither torch nor a GPU. Every variant is
``mlbfgs.MLBFGS`` with the same batches, schedule and initial weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import MLBFGS
from ..data import Dataset
from .schedule import batch_order, cosine

Array = npt.NDArray[np.float32]
VARIANTS: dict[str, dict[str, Any]] = {
    "full (momentum + damping)": {"damping": True},
    "momentum only": {"damping": False},
    "damping only": {"damping": True, "hessian_momentum": 0.0},
    "neither (vanilla)": {"damping": False, "hessian_momentum": 0.0},
}


class NumpyMLP:
    """``softmax(W2 tanh(W1 x + b1) + b2)`` with cross-entropy; forward and backward by hand."""

    def __init__(self, inputs: int, hidden: int, classes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params: list[Array] = [
            (rng.normal(0, 1 / math.sqrt(inputs), (inputs, hidden))).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.normal(0, 1 / math.sqrt(hidden), (hidden, classes))).astype(np.float32),
            np.zeros(classes, np.float32),
        ]

    def loss_and_grads(self, x: Array, y: npt.NDArray[np.int64]) -> tuple[float, list[Array]]:
        w1, b1, w2, b2 = self.params
        h = np.tanh(x @ w1 + b1)
        logits = h @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -float(np.mean(np.log(p[np.arange(n), y] + 1e-30)))
        d_logits = p
        d_logits[np.arange(n), y] -= 1.0
        d_logits /= n
        d_h = (d_logits @ w2.T) * (1.0 - h * h)
        grads = [x.T @ d_h, d_h.sum(axis=0), h.T @ d_logits, d_logits.sum(axis=0)]
        return loss, [g.astype(np.float32) for g in grads]

    def loss(self, x: Array, y: npt.NDArray[np.int64]) -> float:
        return self.loss_and_grads(x, y)[0]


@dataclass
class AblationCurve:
    label: str
    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.loss[-1])


def run_ablation(
    dataset: Dataset,
    *,
    iterations: int,
    batch_size: int = 16,
    lr: float = 0.1,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    eval_every: int = 10,
    progress: Callable[[int], None] | None = None,
) -> list[AblationCurve]:
    """Train one MLP per variant of ``VARIANTS``; the training loss on the whole train set."""
    x = dataset.x_train.reshape(len(dataset.y_train), -1)
    y = dataset.y_train
    order = batch_order(len(y), batch_size, iterations, seed)
    curves = []
    for label, variant in VARIANTS.items():
        model = NumpyMLP(x.shape[1], 32, dataset.classes, seed)
        settings = {**(options or {}), **variant}
        opt = MLBFGS(model.params, lr=cosine(lr, iterations), **settings)
        curve = AblationCurve(label, [0], [model.loss(x, y)])
        for t, index in enumerate(order, start=1):
            _, grads = model.loss_and_grads(x[index], y[index])
            opt.step(grads)
            if progress is not None:
                progress(1)
            if t % eval_every == 0 or t == iterations:
                value = model.loss(x, y)
                curve.iterations.append(t)
                curve.loss.append(value if math.isfinite(value) else math.inf)
                if not math.isfinite(value) or value > 1e3:
                    curve.loss[-1] = math.inf
                    if progress is not None:
                        progress(iterations - t)
                    break
        stats = opt.stats()[0]
        curve.stats = {k: stats[k] for k in ("pairs_pushed", "pairs_rejected", "skipped_steps")}
        curves.append(curve)
    return curves
