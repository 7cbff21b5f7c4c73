"""The protocol of the convergence suite, fixed before any result is looked at.

1. Tuning: every method runs every point of its lr grid on the tuning seed (0). The
   grid is the task's five points (Adam's scaled by ``ADAM_GRID_SCALE``); the chosen lr
   is the one with the lowest final training loss among the runs that did not diverge.
2. Evaluation: each method runs at its chosen lr on the evaluation seeds (1-5), which
   were not used for tuning; every number reported comes from these runs.
3. Diverged means a non-finite training loss, or a final training loss above the
   initial one. Reported: divergences on the grid and on the evaluation seeds, the
   median final training loss and test accuracy, and the iterations a method needs to
   reach SGD's final training loss (per seed, as a multiple of SGD's own; median).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol as Interface

from .. import parallel
from .methods import METHODS
from .runs import RunKey, RunResult, run
from .tasks import TASKS

TUNING_SEED = 0
EVALUATION_SEEDS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Protocol:
    """Seeds and budgets; ``quick()`` is the CI-sized version."""

    tuning_seed: int = TUNING_SEED
    seeds: tuple[int, ...] = EVALUATION_SEEDS
    budget: float = 1.0
    """Fraction of each task's iterations."""
    evaluations: int = 20
    """Evaluations of the training loss per run (evenly spaced; the last at the end)."""
    grid_points: int | None = None
    """Keep only this many middle points of each grid (None: all)."""

    @classmethod
    def quick(cls) -> Protocol:
        return cls(seeds=(1, 2), budget=0.25, evaluations=5, grid_points=3)

    def grid(self, task: str, method: str) -> list[float]:
        points = [lr * METHODS[method].grid_scale for lr in TASKS[task].lr_grid]
        if self.grid_points is None or self.grid_points >= len(points):
            return points
        start = (len(points) - self.grid_points) // 2
        return points[start : start + self.grid_points]

    def key(self, task: str, method: str, lr: float, seed: int) -> RunKey:
        spec = TASKS[task]
        iterations = max(1, round(spec.iterations * self.budget))
        eval_every = max(1, iterations // self.evaluations)
        return RunKey(task, method, lr, seed, iterations, eval_every)


@dataclass
class Outcome:
    """What the suite measured for one task and one method."""

    task: str
    method: str
    grid: list[RunResult]
    lr: float
    runs: list[RunResult]

    @property
    def grid_diverged(self) -> int:
        return sum(r.diverged for r in self.grid)

    @property
    def seeds_diverged(self) -> int:
        return sum(r.diverged for r in self.runs)

    @property
    def final_loss(self) -> float:
        """Median over the evaluation seeds (a diverged run counts as infinite)."""
        return median(math.inf if r.diverged else r.final_loss for r in self.runs)

    @property
    def test_accuracy(self) -> float:
        return median(r.test_accuracy for r in self.runs)


def median(values: Iterable[float]) -> float:
    """The median (NaN for no values); an inf among them counts as a large value."""
    values = list(values)
    return statistics.median(values) if values else math.nan


class _HasLr(Interface):
    @property
    def lr(self) -> float: ...


class Tuned(Interface):
    """What ``choose_lr`` reads of a run (the suite's and the race's runs have it)."""

    @property
    def key(self) -> _HasLr: ...

    @property
    def diverged(self) -> bool: ...

    @property
    def final_loss(self) -> float: ...


def choose_lr(grid: Sequence[Tuned]) -> float:
    """The lr of the lowest final loss among runs that did not diverge (the smallest lr
    if all diverged, so that the evaluation still runs)."""
    stable = [r for r in grid if not r.diverged]
    if not stable:
        return min(r.key.lr for r in grid)
    return min(stable, key=lambda r: (r.final_loss, r.key.lr)).key.lr


def iterations_ratio(outcome: Outcome, sgd: Outcome) -> float:
    """Median over seeds of (iterations to reach SGD's final loss) / (SGD's iterations).

    ``inf`` for a seed where the method never reaches it; NaN if SGD diverged there.
    """
    ratios = []
    for mine, reference in zip(outcome.runs, sgd.runs, strict=True):
        target = reference.final_loss
        theirs = reference.first_below(target)
        if reference.diverged or theirs is None:
            ratios.append(math.nan)
            continue
        reached = mine.first_below(target)
        ratios.append(math.inf if reached is None else reached / theirs)
    return median(r for r in ratios if not math.isnan(r))


def execute(keys: Sequence[RunKey], jobs: int, progress: Callable[[int], None]) -> list[RunResult]:
    """Run ``keys`` (in order of the result list) on ``jobs`` processes."""
    return parallel.execute(run, keys, jobs, progress)


def run_suite(
    tasks: Sequence[str],
    methods: Sequence[str],
    protocol: Protocol,
    jobs: int,
    progress: Callable[[int], None],
) -> list[Outcome]:
    """Tune on the tuning seed, then evaluate on the evaluation seeds."""
    pairs = [(task, method) for task in tasks for method in methods]
    tuning = {
        pair: [protocol.key(*pair, lr, protocol.tuning_seed) for lr in protocol.grid(*pair)]
        for pair in pairs
    }
    flat = [key for keys in tuning.values() for key in keys]
    results = dict(zip(flat, execute(flat, jobs, progress), strict=True))
    chosen = {pair: choose_lr([results[key] for key in tuning[pair]]) for pair in pairs}
    evaluation = {
        pair: [protocol.key(*pair, chosen[pair], seed) for seed in protocol.seeds] for pair in pairs
    }
    flat = [key for keys in evaluation.values() for key in keys]
    results.update(zip(flat, execute(flat, jobs, progress), strict=True))
    return [
        Outcome(
            pair[0],
            pair[1],
            [results[key] for key in tuning[pair]],
            chosen[pair],
            [results[key] for key in evaluation[pair]],
        )
        for pair in pairs
    ]


def total_runs(tasks: Sequence[str], methods: Sequence[str], protocol: Protocol) -> int:
    """How many runs ``run_suite`` makes (for a progress bar)."""
    return sum(
        len(protocol.grid(task, method)) + len(protocol.seeds)
        for task in tasks
        for method in methods
    )
