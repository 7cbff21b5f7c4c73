"""The race: tune every optimizer on every workload, evaluate, set targets, score.

Three rounds of runs, each spread over the worker processes: the grid on the tuning
seed; the one extra point where the best lr was at an edge; the chosen lr on the
evaluation seeds. Everything after the runs (targets, times to target, scores) is
plain arithmetic on their curves, in this module and ``scoring.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..convergence.suite import choose_lr, median
from ..parallel import execute
from .peers import BASELINES
from .protocol import RaceKey, RaceProtocol
from .runs import RaceResult, run
from .scoring import profile, ratios, score, taus
from .store import RunStore, Saving


@dataclass
class Outcome:
    """What the race measured for one workload and one optimizer."""

    workload: str
    optimizer: str
    grid: list[RaceResult]
    """The tuning runs, the widened point last if there was one."""
    lr: float
    runs: list[RaceResult]
    """At ``lr`` on the evaluation seeds."""

    @property
    def grid_diverged(self) -> int:
        return sum(r.diverged for r in self.grid)

    @property
    def seeds_diverged(self) -> int:
        return sum(r.diverged for r in self.runs)

    @property
    def final_metric(self) -> float:
        """Median over the evaluation seeds (a diverged run counts as infinite)."""
        return median(math.inf if r.diverged else r.final_loss for r in self.runs)

    @property
    def held_out(self) -> float:
        return median(r.held_out for r in self.runs)

    @property
    def ms_per_step(self) -> float:
        return median(r.ms_per_step for r in self.runs)

    @property
    def errors(self) -> list[RaceResult]:
        return [r for r in self.grid + self.runs if r.error is not None]

    def to_target(self, target: float) -> tuple[float, float]:
        """Median over seeds of (steps, seconds) to ``target``; inf counts, NaN target: inf."""
        reached = [r.reached(target) for r in self.runs]
        return median(s for s, _ in reached), median(t for _, t in reached)


def run_race(
    protocol: RaceProtocol,
    workloads: Sequence[str],
    optimizers: Sequence[str],
    jobs: int,
    progress: Callable[[int], None],
    worker: Callable[[RaceKey], RaceResult] = run,
    store: RunStore | None = None,
) -> list[Outcome]:
    """Tune on the tuning seed (widening at an edge), then evaluate on the other seeds.

    ``progress(1)`` once per run and once per edge check that adds no run, so that it
    counts to ``total_runs``. With a ``store``, each run is saved as it finishes, and a
    run the store gives back (``RunStore.reuse``) is taken from it instead of run again.
    """
    if store is not None:
        worker = Saving(worker, store)
    pairs = [(w, o) for w in workloads for o in optimizers]
    seed = protocol.tuning_seed
    grids = {(w, o): [protocol.key(w, o, lr, seed) for lr in protocol.grid(o)] for w, o in pairs}
    tuning = [k for keys in grids.values() for k in keys]
    results = _execute(tuning, jobs, progress, worker, store)

    extra: list[RaceKey] = []
    for (w, o), keys in grids.items():
        lr = protocol.widened(o, choose_lr([results[k] for k in keys]))
        if lr is None:
            progress(int(protocol.widen))
            continue
        keys.append(protocol.key(w, o, lr, seed))
        extra.append(keys[-1])
    results.update(_execute(extra, jobs, progress, worker, store))

    chosen = {pair: choose_lr([results[k] for k in keys]) for pair, keys in grids.items()}
    evaluation = {
        (w, o): [protocol.key(w, o, chosen[w, o], s) for s in protocol.seeds] for w, o in pairs
    }
    flat = [k for keys in evaluation.values() for k in keys]
    results.update(_execute(flat, jobs, progress, worker, store))
    return [
        Outcome(
            w,
            o,
            [results[k] for k in grids[w, o]],
            chosen[w, o],
            [results[k] for k in evaluation[w, o]],
        )
        for w, o in pairs
    ]


def _execute(
    keys: list[RaceKey],
    jobs: int,
    progress: Callable[[int], None],
    worker: Callable[[RaceKey], RaceResult],
    store: RunStore | None,
) -> dict[RaceKey, RaceResult]:
    stored = {k: r for k in keys if store is not None and (r := store.load(k)) is not None}
    progress(len(stored))
    missing = [k for k in keys if k not in stored]
    return stored | dict(zip(missing, execute(worker, missing, jobs, progress), strict=True))


def total_runs(protocol: RaceProtocol, workloads: Sequence[str], optimizers: Sequence[str]) -> int:
    """The progress count of ``run_race``: grid, one edge check, seeds, per pair."""
    per_pair = len(protocol.grid_exponents) + int(protocol.widen) + len(protocol.seeds)
    return len(workloads) * len(optimizers) * per_pair


@dataclass(frozen=True)
class Target:
    """A workload's target: the best baseline's median final metric (NaN if none is
    finite, and then no optimizer reaches it)."""

    value: float
    baseline: str | None


def targets(outcomes: Sequence[Outcome]) -> dict[str, Target]:
    """Per workload, the lowest median final metric among the baselines present (ties:
    the first in ``BASELINES``, which has the same value)."""
    found = {}
    for workload in dict.fromkeys(o.workload for o in outcomes):
        candidates = [
            (o.final_metric, BASELINES.index(o.optimizer), o.optimizer)
            for o in outcomes
            if o.workload == workload and o.optimizer in BASELINES and math.isfinite(o.final_metric)
        ]
        value, _, name = min(candidates, default=(math.nan, 0, None))
        found[workload] = Target(value, name)
    return found


@dataclass(frozen=True)
class Standings:
    """Medians of steps and seconds to target, their ratios, and the scores."""

    workloads: list[str]
    optimizers: list[str]
    steps: np.ndarray
    """(optimizers x workloads) median steps to target (inf: missed)."""
    seconds: np.ndarray
    step_ratios: np.ndarray
    second_ratios: np.ndarray
    tau: np.ndarray
    rho_steps: np.ndarray
    rho_seconds: np.ndarray
    score_steps: np.ndarray
    score_seconds: np.ndarray


def standings(
    outcomes: Sequence[Outcome], found: dict[str, Target], protocol: RaceProtocol
) -> Standings:
    """Times to target, ratios, profiles and B, for steps and for seconds."""
    workloads = list(dict.fromkeys(o.workload for o in outcomes))
    optimizers = list(dict.fromkeys(o.optimizer for o in outcomes))
    by_pair = {(o.workload, o.optimizer): o for o in outcomes}
    steps = np.full((len(optimizers), len(workloads)), np.inf)
    seconds = np.full_like(steps, np.inf)
    for i, name in enumerate(optimizers):
        for j, workload in enumerate(workloads):
            target = found[workload].value
            if math.isfinite(target):
                steps[i, j], seconds[i, j] = by_pair[workload, name].to_target(target)
    tau = taus(protocol.max_tau, protocol.tau_points)
    step_ratios = ratios(steps, protocol.max_tau)
    second_ratios = ratios(seconds, protocol.max_tau)
    rho_steps = profile(step_ratios, tau)
    rho_seconds = profile(second_ratios, tau)
    return Standings(
        workloads,
        optimizers,
        steps,
        seconds,
        step_ratios,
        second_ratios,
        tau,
        rho_steps,
        rho_seconds,
        score(rho_steps, tau),
        score(rho_seconds, tau),
    )
