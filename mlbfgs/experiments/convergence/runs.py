"""One training run of the convergence suite: a task, a method, an lr and a seed.

``train`` is the loop itself, shared with the optimizer race (``experiments/race``): the
same schedule, the same order of operations, the same evaluation rule for every optimizer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..schedule import cosine
from .methods import METHODS
from .tasks import TASKS, Problem


class LossCurve:
    """The training loss at evaluated iterations (the first entry: the initial point)."""

    iterations: list[int]
    loss: list[float]

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    @property
    def diverged(self) -> bool:
        """Non-finite, or a final training loss above the initial one."""
        return not math.isfinite(self.final_loss) or self.final_loss > self.loss[0]

    def first_below(self, target: float) -> int | None:
        """The first evaluated iteration whose training loss is at or below ``target``."""
        for iteration, value in zip(self.iterations, self.loss, strict=True):
            if value <= target:
                return iteration
        return None


@dataclass(frozen=True)
class RunKey:
    """Everything that determines a run (it is deterministic given these)."""

    task: str
    method: str
    lr: float
    seed: int
    iterations: int
    eval_every: int


@dataclass
class RunResult(LossCurve):
    """The training loss at each evaluation, the test accuracy, and whether it diverged."""

    key: RunKey
    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    test_accuracy: float = math.nan
    seconds: float = 0.0


@dataclass
class Trace(LossCurve):
    """What ``train`` records: the curve, the wall time of the whole loop, the training
    time (evaluations excluded) up to each evaluation, and the steps taken."""

    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    training_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def train(
    problem: Problem,
    optimizer: Any,
    lr: float,
    iterations: int,
    evaluate_at: Callable[[int], bool],
    trace: Trace | None = None,
) -> Trace:
    """Cosine-annealed training from ``lr``, the training loss evaluated at step 0 and at
    every step where ``evaluate_at`` holds; stops at a non-finite loss.

    A param group's ``lr_ratio`` (1 if absent) scales its lr, for optimizers that drive
    some parameters at a fixed multiple of the lr (``race.peers.MuonWithAdamW``). Pass
    ``trace`` to keep what was recorded if a step raises.
    """
    trace = Trace() if trace is None else trace
    schedule = cosine(lr, iterations)
    trace.iterations.append(0)
    trace.loss.append(problem.train_loss())
    trace.training_seconds.append(0.0)
    start = tick = time.perf_counter()
    training = 0.0
    try:
        for t in range(1, iterations + 1):
            for group in optimizer.param_groups:
                group["lr"] = schedule(t) * group.get("lr_ratio", 1.0)
            for p in problem.params:
                p.grad = None
            problem.batch_loss(t).backward()
            optimizer.step()
            trace.steps = t
            if evaluate_at(t):
                training += time.perf_counter() - tick
                loss = problem.train_loss()
                trace.iterations.append(t)
                trace.loss.append(loss)
                trace.training_seconds.append(training)
                tick = time.perf_counter()
                if not math.isfinite(trace.loss[-1]):
                    break
    finally:
        trace.seconds = time.perf_counter() - start
    return trace


def run(key: RunKey) -> RunResult:
    """Train ``key.method`` on ``key.task`` from the seed's initial point; one torch thread."""
    torch.set_num_threads(1)
    task, method = TASKS[key.task], METHODS[key.method]
    problem = task.build(key.seed, key.iterations)
    optimizer = method.make(problem.params, key.lr, task.weight_decay)

    def evaluate_at(t: int) -> bool:
        return t % key.eval_every == 0 or t == key.iterations

    trace = train(problem, optimizer, key.lr, key.iterations, evaluate_at)
    result = RunResult(key, trace.iterations, trace.loss, seconds=trace.seconds)
    if math.isfinite(result.final_loss):
        result.test_accuracy = problem.test_accuracy()
    return result
