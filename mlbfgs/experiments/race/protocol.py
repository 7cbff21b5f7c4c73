"""The race's protocol, fixed before any result was read (issue 17).

1. Workloads: the convergence suite's seven tasks (their budgets and training-loss
   metric), ``lm-char``, ``autoencoder``, ``mnist-mlp`` and the suite's two quadratics made
   diagonal, ``quad-diag-1e2`` and ``quad-diag-1e6`` (``workloads.py``). Every
   optimizer starts from the seed's weights and sees the seed's batches.
2. Every optimizer: weight decay 0, the suite's cosine schedule to 0.001x over the
   budget, no warm-up beyond what the optimizer does itself.
3. Tuning, the same budget for everyone: the lr grid d x 3^k, k = -2..2, around the
   optimizer's published default d, on seed 0; if the best lr is at an edge of the grid,
   exactly one more point, 3x beyond that edge. Best: the lowest final training metric
   among runs that did not diverge (if all diverged, the smallest lr, so the grid widens
   downwards). The chosen lr then runs on seeds 1, 2, 3, the only runs reported.
4. Diverged: a non-finite metric, a final metric above the initial one, or a step that
   raised.
5. Target, as AlgoPerf: per workload, the lowest median (over seeds) final metric among
   the baselines AdamW, NAdamW and SGD. Per seed, steps to target is the first of 40
   evenly spaced evaluations at or below it (inf if none), seconds to target the
   training time (evaluations excluded, one torch thread per process) up to there; per
   optimizer the median over seeds (inf counts).
6. Score, as AlgoPerf's scoring/performance_profile.py (``scoring.py``): r = t / the
   best t on the workload, r > 4 missed; rho(tau) the share of workloads with r <= tau
   on 100 points of [1, 4]; B = the trapezoid integral of rho over tau, / 3. For steps
   and for seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .peers import BASELINES, PEERS, WEIGHT_DECAY
from .workloads import WORKLOADS

TUNING_SEED = 0
EVALUATION_SEEDS = (1, 2, 3)
GRID_EXPONENTS = (-2, -1, 0, 1, 2)
"""lr = d x 3^k; a widened grid adds k = -3 or 3."""
GRID_BASE = 3.0
EVALUATIONS = 40
MAX_TAU = 4.0
TAU_POINTS = 100


@dataclass(frozen=True)
class RaceKey:
    """Everything that determines a run of the race (it is deterministic given these)."""

    workload: str
    optimizer: str
    lr: float
    seed: int
    iterations: int
    evaluations: int

    def evaluated(self) -> list[int]:
        """The steps evaluated: ``evaluations`` evenly spaced ones, the last at the end."""
        n = min(self.evaluations, self.iterations)
        return sorted({math.ceil(k * self.iterations / n) for k in range(1, n + 1)})


@dataclass(frozen=True)
class RaceProtocol:
    """Seeds, budget, grid and scoring; ``quick()`` is the CI-sized version."""

    tuning_seed: int = TUNING_SEED
    seeds: tuple[int, ...] = EVALUATION_SEEDS
    budget: float = 1.0
    """Fraction of each workload's steps."""
    evaluations: int = EVALUATIONS
    grid_exponents: tuple[int, ...] = GRID_EXPONENTS
    widen: bool = True
    """One more point beyond the edge where the best lr is (``quick()`` only: False)."""
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    optimizers: tuple[str, ...] = tuple(PEERS)
    max_tau: float = MAX_TAU
    tau_points: int = TAU_POINTS

    @classmethod
    def quick(cls) -> RaceProtocol:
        """For CI (under a minute on 2 cores): the autoencoder and mnist-mlp at 1/10 of
        their steps (200), SGD, AdamW and mL-BFGS, the grid {d/3, d} without widening,
        10 evaluations, one evaluation seed.

        Not lm-char: mL-BFGS's defaults are heavy-ball SGD for their first 2T = 100 steps
        (warm-up), so a quick race must run well past 100 steps to test them at all, and
        200 steps of lm-char cost ~8 s a run on one core (the autoencoder ~2-3 s).
        """
        return cls(
            seeds=(1,),
            budget=0.1,
            evaluations=10,
            grid_exponents=(-1, 0),
            widen=False,
            workloads=("autoencoder", "mnist-mlp"),
            optimizers=("SGD", "AdamW", "mL-BFGS"),
        )

    def lr(self, optimizer: str, exponent: int) -> float:
        """d x 3^k, to 10 significant digits (0.3, not 0.30000000000000004)."""
        return float(f"{PEERS[optimizer].default_lr * GRID_BASE**exponent:.10g}")

    def grid(self, optimizer: str) -> list[float]:
        return [self.lr(optimizer, k) for k in self.grid_exponents]

    def widened(self, optimizer: str, best: float) -> float | None:
        """The one extra point when ``best`` is at an edge of the grid (None otherwise)."""
        grid = self.grid(optimizer)
        if not self.widen:
            return None
        if best == min(grid):
            return self.lr(optimizer, min(self.grid_exponents) - 1)
        if best == max(grid):
            return self.lr(optimizer, max(self.grid_exponents) + 1)
        return None

    def key(self, workload: str, optimizer: str, lr: float, seed: int) -> RaceKey:
        iterations = max(1, round(WORKLOADS[workload].iterations * self.budget))
        return RaceKey(workload, optimizer, lr, seed, iterations, self.evaluations)

    def header(self, workloads: list[str], optimizers: list[str], jobs: int) -> list[str]:
        """The protocol as printed above the results (deterministic)."""
        exponents = ", ".join(str(k) for k in self.grid_exponents)
        baselines = ", ".join(b for b in BASELINES if b in optimizers)
        widening = (
            "one more point 3x beyond the edge when the best lr is at an edge"
            if self.widen
            else "no widening"
        )
        lines = [
            f"optimizer race (AlgoPerf-style): {len(workloads)} workloads x {len(optimizers)} "
            f"optimizers; {jobs} processes",
            f"  tuning: lr = d x 3^k, k in {{{exponents}}}, d the optimizer's default; "
            f"{widening}; seed {self.tuning_seed}; best = lowest final training metric among "
            "runs that did not diverge",
            f"  reported: the chosen lr on seeds {list(self.seeds)}; budget {self.budget:g} x "
            f"each workload's steps; weight decay {WEIGHT_DECAY:g} for every optimizer; "
            "the suite's cosine lr to 0.001x, no warm-up beyond the optimizer's own",
            "  diverged: a non-finite metric, a final metric above the initial one, or a "
            "step that raised",
            f"  target: the lowest median final metric of {baselines}; steps (seconds: "
            f"training only, 1 torch thread per process) to the first of {self.evaluations} "
            "evaluations at or below it; median over seeds, never = inf",
            f"  score: r = t / best t per workload, r > {self.max_tau:g} missed; rho(tau) = "
            f"share of workloads with r <= tau, {self.tau_points} points of "
            f"[1, {self.max_tau:g}]; B = trapezoid integral of rho / {self.max_tau - 1:g}",
            "  workloads:",
        ]
        for name in workloads:
            task = WORKLOADS[name]
            steps = max(1, round(task.iterations * self.budget))
            lines.append(f"    {name}: {task.description}; {steps} steps")
        if "lm-char" in workloads:
            from .lm import describe_corpus

            lines.append(f"    (lm-char text: {describe_corpus()})")
        lines.append("  optimizers:")
        for name in optimizers:
            grid = ", ".join(f"{lr:.3g}" for lr in self.grid(name))
            lines.append(f"    {PEERS[name].describe()}; grid {grid}")
        return lines
