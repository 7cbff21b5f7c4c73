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
from .numpy_mlp import NumpyMLP
from .schedule import batch_order, cosine

Array = npt.NDArray[np.float32]
PAPER = {"preset": "paper"}  # the figure ablates Algorithm 1 as the paper writes it
VARIANTS: dict[str, dict[str, Any]] = {
    "full (momentum + damping)": {**PAPER, "damping": True},
    "momentum only": {**PAPER, "damping": False},
    "damping only": {**PAPER, "damping": True, "hessian_momentum": 0.0},
    "neither (vanilla)": {**PAPER, "damping": False, "hessian_momentum": 0.0},
}


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
