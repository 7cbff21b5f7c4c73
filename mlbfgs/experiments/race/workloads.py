"""The race's workloads: the convergence suite's seven tasks, three more, and the suite's
two quadratics made diagonal.

A workload is a convergence ``Task`` (budget, seeded ``build``), so the machinery that
trains and evaluates the suite's tasks trains these too. Each problem may also define
``held_out()``, a number on data it never trains on, reported next to the metric; the
suite's tasks report their test accuracy there (NaN for the quadratics).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch import nn

from ..convergence.tasks import (
    QUADRATIC_GRID,
    SGD_GRID,
    TASKS,
    Classifier,
    NoisyQuadratic,
    Problem,
    Split,
    Task,
    seeded,
)
from ..schedule import batch_order
from .lm import CharLM, describe_corpus

AUTOENCODER_WIDTHS = (784, 400, 200, 100, 30, 100, 200, 400, 784)
ALGOPERF_MNIST_MEAN, ALGOPERF_MNIST_STD = 0.1307, 0.3081


@cache
def _pixels() -> Split:
    from ...data.packaged import mnist5k_pixels

    return tuple(torch.from_numpy(a) for a in mnist5k_pixels())  # type: ignore[return-value]


def autoencoder_model() -> nn.Module:
    """784-400-200-100-30-100-200-400-784: tanh hidden layers, a linear 30-unit code, and
    logits out (the sigmoid is in the loss); torch's default initialisation."""
    layers: list[nn.Module] = []
    pairs = list(zip(AUTOENCODER_WIDTHS[:-1], AUTOENCODER_WIDTHS[1:], strict=True))
    for i, (n_in, n_out) in enumerate(pairs):
        layers.append(nn.Linear(n_in, n_out))
        if n_out != 30 and i < len(pairs) - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Autoencoder(Problem):
    """The deep autoencoder of Hinton & Salakhutdinov (2006) and Martens (2010), scaled
    down to mnist5k: the pixels' binary cross-entropy summed over the 784 pixels and
    averaged over the batch of 100; the metric is on the first 1,000 training images."""

    def __init__(self, seed: int, iterations: int) -> None:
        self.x_train, _, self.x_test, _ = _pixels()
        self.model = seeded(seed, autoencoder_model, torch.float32)
        self.params = list(self.model.parameters())
        order = batch_order(len(self.x_train), 100, iterations, seed)
        self.batches = torch.as_tensor(np.asarray(order, dtype=np.int64))

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits(self.model(x), x, reduction="none")
        return bce.sum(dim=1).mean()

    def batch_loss(self, t: int) -> torch.Tensor:
        return self._loss(self.x_train[self.batches[t - 1]])

    @torch.no_grad()
    def train_loss(self) -> float:
        return float(self._loss(self.x_train[:1000]))

    @torch.no_grad()
    def held_out(self) -> float:
        """Reconstruction loss on the 1,000 held-out images."""
        return float(self._loss(self.x_test))


def algoperf_mnist_model() -> nn.Module:
    """AlgoPerf's MNIST model (algoperf/workloads/mnist/mnist_pytorch/workload.py):
    Linear(784, 128), Sigmoid, Linear(128, 10), as its ``init_model_fn`` creates it the
    first time, with torch's default initialisation (its ``reset_parameters``, used only
    to re-initialise, would draw LeCun normal)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Sigmoid(), nn.Linear(128, 10))


@cache
def _algoperf_mnist_data() -> Split:
    """mnist5k's pixels in [0, 1], normalised by AlgoPerf's (x - 0.1307) / 0.3081.

    AlgoPerf's input pipeline applies those constants to the uint8 values 0-255 as read
    by tensorflow_datasets (it casts without dividing by 255); the constants are MNIST's
    mean and std in [0, 1], which is where they are applied here.
    """
    x_train, y_train, x_test, y_test = _pixels()

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - ALGOPERF_MNIST_MEAN) / ALGOPERF_MNIST_STD

    return normalise(x_train), y_train, normalise(x_test), y_test


class AlgoPerfMnist(Classifier):
    """Cross-entropy, batch 128; the metric is the training loss on all 4,000 training
    images, the held-out number the accuracy on the other 1,000 (AlgoPerf's target,
    0.97 validation accuracy, is defined on the full MNIST, which is not on this machine;
    mnist5k is 5,000 of its images)."""

    def __init__(self, seed: int, iterations: int) -> None:
        model = seeded(seed, algoperf_mnist_model, torch.float32)
        super().__init__(model, _algoperf_mnist_data(), 128, iterations, seed)

    def held_out(self) -> float:
        return self.test_accuracy()


def _new(name: str, description: str, build: Callable[[int, int], Problem]) -> Task:
    """A new workload as a suite task: 2000 steps, no weight decay (the suite's own SGD
    grid is there only so that the task could join the suite)."""
    return Task(name, description, 2000, SGD_GRID, 0.0, True, build)


NEW: dict[str, Task] = {
    task.name: task
    for task in (
        _new(
            "lm-char",
            "causal transformer LM, characters of Python's pydoc_data.topics (last 10% held "
            "out), 2 pre-LN layers, d 64, 4 heads, MLP 4x, context 64, learned positions, "
            "untied head, batch 32; metric: training loss on 64 fixed windows",
            CharLM,
        ),
        _new(
            "autoencoder",
            "mnist5k pixels in [0, 1], tanh autoencoder 784-400-200-100-30-100-200-400-784, "
            "BCE summed over pixels, batch 100; metric: training loss on the first 1,000 "
            "training images",
            Autoencoder,
        ),
        _new(
            "mnist-mlp",
            "AlgoPerf's MNIST workload on mnist5k (the full MNIST is not on this machine): "
            "784-128 sigmoid-10, inputs (x - 0.1307) / 0.3081, cross-entropy, batch 128; "
            "metric: training loss on the 4,000 training images",
            AlgoPerfMnist,
        ),
    )
}


def _diagonal(condition: float) -> Callable[[int, int], Problem]:
    def build(seed: int, iterations: int) -> Problem:
        return NoisyQuadratic(10_000, condition, 0.1, seed, block=1)

    return build


DIAGONAL: dict[str, Task] = {
    f"quad-diag-{name}": Task(
        f"quad-diag-{name}",
        f"noisy diagonal quadratic, n = 1e4, condition {name}, noise 0.1 (the suite's "
        f"quad-{name} without its rotations)",
        1000,
        QUADRATIC_GRID,
        0.0,
        False,
        _diagonal(condition),
    )
    for name, condition in (("1e2", 1e2), ("1e6", 1e6))
}
"""Issue 17's target on a noisy diagonal quadratic: the suite's quadratics with B diagonal,
where the paper's step was seen to beat SGD (added, with this definition, before any run
of them was read)."""

WORKLOADS: dict[str, Task] = {**TASKS, **NEW, **DIAGONAL}
"""Every workload of the race, by name: the suite's seven tasks, the three new ones, the
two diagonal quadratics."""

HELD_OUT: dict[str, str] = {
    "lm-char": "validation loss",
    "autoencoder": "test loss",
    "mnist-mlp": "validation accuracy",
}
"""What ``held_out()`` measures, per workload (test accuracy where not listed)."""


def held_out(problem: Problem) -> float:
    """The problem's held-out number: ``held_out()`` if it has one, else test accuracy."""
    measure = getattr(problem, "held_out", None)
    return float(measure()) if measure is not None else problem.test_accuracy()


def corpus_note() -> str:
    return describe_corpus()
