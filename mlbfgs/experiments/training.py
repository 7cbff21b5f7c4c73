"""The demo's training comparison: one model, one batch order, one schedule, four optimizers.

Every optimizer starts from the same seeded weights, sees the same mini-batches in the same
order and follows the same cosine schedule shape (from its own base learning rate), so the
curves differ only by the optimizer. Training time excludes the periodic evaluation of the
full training loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from .models import seeded_model
from .schedule import batch_order, cosine

EVAL_LIMIT = 5000
"""The training loss is evaluated on at most this many training images."""


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer configuration: ``kind`` is ``mlbfgs``, ``sgd`` or ``adam``."""

    label: str
    kind: str
    lr: float
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.label}: {self.kind} lr={self.lr:g}" + (f", {extra}" if extra else "")


def recommended_specs() -> list[OptimizerSpec]:
    """The demo's four optimizers.

    mL-BFGS runs at the library's defaults (the paper's Table 5 plus the default step
    control) with the lr the convergence suite chose for it on this network (0.1, as for
    SGD); SGD (momentum 0.9) and Adam take the suite's choices too (docs/results.md).
    Vanilla stochastic L-BFGS is the paper's step without momentum on the curvature
    statistics and without damping.
    """
    vanilla = {"preset": "paper", "hessian_momentum": 0.0, "damping": False}
    return [
        OptimizerSpec("mL-BFGS", "mlbfgs", 0.1, {}),
        OptimizerSpec("SGD", "sgd", 0.1, {"momentum": 0.9}),
        OptimizerSpec("Adam", "adam", 0.01, {}),
        OptimizerSpec("L-BFGS", "mlbfgs", 0.1, vanilla),
    ]


def make_optimizer(spec: OptimizerSpec, params: Sequence[torch.Tensor]) -> Any:
    """A torch-style optimizer (``param_groups`` with ``lr``, ``step()``) for ``spec``."""
    params = list(params)
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, **spec.options)
    if spec.kind == "adam":
        return torch.optim.Adam(params, lr=spec.lr, **spec.options)
    if spec.kind == "mlbfgs":
        from ..torch import MLBFGS as TorchMLBFGS

        return TorchMLBFGS(params, lr=spec.lr, **spec.options)
    raise ValueError(f"optimizer kind must be mlbfgs, sgd or adam, got {spec.kind!r}")


@dataclass
class Curve:
    """What one training run measured."""

    label: str
    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    steps: int = 0
    test_accuracy: float = math.nan
    diverged: bool = False

    def reach(self, target: float) -> tuple[int, float] | None:
        """(iteration, training seconds) of the first evaluation at or below ``target``."""
        for it, sec, value in zip(self.iterations, self.seconds, self.loss, strict=True):
            if value <= target:
                return it, sec
        return None

    @property
    def final_loss(self) -> float:
        return self.loss[-1] if self.loss else math.nan

    @property
    def seconds_per_iteration(self) -> float:
        return self.train_seconds / self.steps if self.steps else math.nan


def _tensors(dataset: Dataset) -> dict[str, torch.Tensor]:
    return {
        "x_train": torch.from_numpy(dataset.x_train),
        "y_train": torch.from_numpy(dataset.y_train),
        "x_eval": torch.from_numpy(dataset.x_train[:EVAL_LIMIT]),
        "y_eval": torch.from_numpy(dataset.y_train[:EVAL_LIMIT]),
        "x_test": torch.from_numpy(dataset.x_test),
        "y_test": torch.from_numpy(dataset.y_test),
    }


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y), in chunks."""
    model.eval()
    total, correct = 0.0, 0
    for start in range(0, len(y), 1024):
        logits = model(x[start : start + 1024])
        target = y[start : start + 1024]
        total += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train()
    return total / len(y), correct / len(y)


def train(
    spec: OptimizerSpec,
    dataset: Dataset,
    order: Sequence[Sequence[int]],
    *,
    seed: int = 0,
    eval_every: int = 10,
    progress: Callable[[int], None] | None = None,
) -> Curve:
    """Train a fresh seeded model with ``spec`` over the batches in ``order``."""
    data = _tensors(dataset)
    model = seeded_model(dataset.image_shape, dataset.classes, seed)
    params = list(model.parameters())
    optimizer = make_optimizer(spec, params)
    lr = cosine(spec.lr, len(order))
    curve = Curve(spec.label)
    loss0, _ = evaluate(model, data["x_eval"], data["y_eval"])
    curve.iterations.append(0)
    curve.seconds.append(0.0)
    curve.loss.append(loss0)
    batches = [torch.as_tensor(np.asarray(b, dtype=np.int64)) for b in order]
    for t, index in enumerate(batches, start=1):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr(t)
        for p in params:
            p.grad = None
        loss = nn.functional.cross_entropy(model(data["x_train"][index]), data["y_train"][index])
        loss.backward()
        optimizer.step()
        curve.train_seconds += time.perf_counter() - start
        curve.steps = t
        if progress is not None:
            progress(1)
        if t % eval_every == 0 or t == len(batches):
            value, _ = evaluate(model, data["x_eval"], data["y_eval"])
            curve.iterations.append(t)
            curve.seconds.append(curve.train_seconds)
            curve.loss.append(value)
            if not math.isfinite(value):
                curve.diverged = True
                if progress is not None:
                    progress(len(batches) - t)
                break
    _, curve.test_accuracy = evaluate(model, data["x_test"], data["y_test"])
    return curve


def time_iterations(
    specs: Sequence[OptimizerSpec],
    dataset: Dataset,
    *,
    batch_size: int,
    warmup_steps: int,
    rounds: int,
    per_round: int,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per whole iteration (forward, backward, step) for each spec, interleaved.

    Each optimizer first takes ``warmup_steps`` (so mL-BFGS preconditions while timed);
    then the specs take turns, ``per_round`` iterations each, ``rounds`` times, so a
    background load hits all of them alike. Returns the per-round means.
    """
    order = batch_order(len(dataset.y_train), batch_size, warmup_steps + rounds * per_round, seed)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    batches = [torch.as_tensor(np.asarray(b, dtype=np.int64)) for b in order]
    runs: list[tuple[nn.Module, list[torch.Tensor], Any]] = []
    for spec in specs:
        model = seeded_model(dataset.image_shape, dataset.classes, seed)
        params: list[torch.Tensor] = list(model.parameters())
        runs.append((model, params, make_optimizer(spec, params)))

    def iterate(run: tuple[nn.Module, list[torch.Tensor], Any], index: torch.Tensor) -> None:
        model, params, optimizer = run

        for p in params:
            p.grad = None
        nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()

    for run in runs:
        for index in batches[:warmup_steps]:
            iterate(run, index)
    times: dict[str, list[float]] = {spec.label: [] for spec in specs}
    position = warmup_steps
    for _ in range(rounds):
        chunk = batches[position : position + per_round]
        position += per_round
        for spec, run in zip(specs, runs, strict=True):
            start = time.perf_counter()
            for index in chunk:
                iterate(run, index)
            times[spec.label].append((time.perf_counter() - start) / per_round)
    for spec, (_, params, _) in zip(specs, runs, strict=True):
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise FloatingPointError(f"{spec.label} produced non-finite weights while timed")
    return times
