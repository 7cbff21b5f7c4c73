"""One training run of the convergence suite: a task, a method, an lr and a seed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..schedule import cosine
from .methods import METHODS
from .tasks import TASKS


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
class RunResult:
    """The training loss at each evaluation, the test accuracy, and whether it diverged."""

    key: RunKey
    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    test_accuracy: float = math.nan
    seconds: float = 0.0

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


def run(key: RunKey) -> RunResult:
    """Train ``key.method`` on ``key.task`` from the seed's initial point; one torch thread."""
    torch.set_num_threads(1)
    task, method = TASKS[key.task], METHODS[key.method]
    problem = task.build(key.seed, key.iterations)
    optimizer = method.make(problem.params, key.lr, task.weight_decay)
    schedule = cosine(key.lr, key.iterations)
    result = RunResult(key, [0], [problem.train_loss()])
    start = time.perf_counter()
    for t in range(1, key.iterations + 1):
        for group in optimizer.param_groups:
            group["lr"] = schedule(t)
        for p in problem.params:
            p.grad = None
        problem.batch_loss(t).backward()
        optimizer.step()
        if t % key.eval_every == 0 or t == key.iterations:
            result.iterations.append(t)
            result.loss.append(problem.train_loss())
            if not math.isfinite(result.loss[-1]):
                break
    result.seconds = time.perf_counter() - start
    if math.isfinite(result.final_loss):
        result.test_accuracy = problem.test_accuracy()
    return result
