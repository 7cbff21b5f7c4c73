"""Figure 1 of the paper: stochastic optimisation of a quadratic with noisy gradients.

``L(theta) = 1/2 theta^T B theta`` with ``B = diag(1, 1/condition)`` and gradients
``g_t = B theta_t + n_t``, ``n_t ~ N(0, sigma^2 I)`` (the paper: ``B = I``, ``sigma = 0.2``).
SGD, vanilla stochastic L-BFGS (pairs from raw iterates and gradients), L-BFGS with
momentum on the curvature statistics (Eq (5), beta = 0.9) and the exact second-order
step ``B^{-1} g`` start from the same point and see the same noise. The L-BFGS variants
are ``mlbfgs.MLBFGS`` itself, with a curvature pair every step and no heavy-ball momentum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .. import MLBFGS

Vector = npt.NDArray[np.float64]
METHODS = ("SGD", "L-BFGS (vanilla)", "L-BFGS + momentum", "exact 2nd order")


@dataclass(frozen=True)
class QuadraticSetup:
    """The problem and the step sizes of Figure 1."""

    condition: float = 1.0
    sigma: float = 0.2
    iterations: int = 100
    start: tuple[float, float] = (-2.0, 2.0)
    sgd_lr: float = 0.1
    newton_lr: float = 0.5
    history_size: int = 2
    beta: float = 0.9
    update_every: int = 1
    damping: bool = False

    @property
    def curvature(self) -> Vector:
        return np.array([1.0, 1.0 / self.condition])

    def loss(self, theta: Vector) -> float:
        return 0.5 * float(np.sum(self.curvature * theta**2))


def _lbfgs(setup: QuadraticSetup, beta: float) -> Callable[[Vector, Vector], None]:
    """An in-place step ``theta <- theta - lr H g`` by mlbfgs.MLBFGS (T = 1, no heavy ball)."""
    state: dict[str, MLBFGS] = {}

    def step(theta: Vector, g: Vector) -> None:
        if "opt" not in state:
            state["opt"] = MLBFGS(
                [theta],
                lr=setup.newton_lr,
                history_size=setup.history_size,
                update_every=setup.update_every,
                hessian_momentum=beta,
                damping=setup.damping,
                momentum=0.0,
                warmup=1,
                preset="paper",  # Figure 1 is about the paper's curvature pairs
            )
        state["opt"].step([g])

    return step


def _subtract(theta: Vector, step: Vector) -> None:
    theta -= step


def run(setup: QuadraticSetup, seed: int) -> dict[str, Vector]:
    """Trajectories ``(iterations + 1, 2)`` of every method for one noise sequence."""
    noise = np.random.default_rng(seed).normal(0.0, setup.sigma, (setup.iterations, 2))
    b = setup.curvature
    steppers: dict[str, Callable[[Vector, Vector], None]] = {
        "SGD": lambda theta, g: _subtract(theta, setup.sgd_lr * g),
        "L-BFGS (vanilla)": _lbfgs(setup, 0.0),
        "L-BFGS + momentum": _lbfgs(setup, setup.beta),
        "exact 2nd order": lambda theta, g: _subtract(theta, setup.newton_lr * g / b),
    }
    paths = {}
    for name, step in steppers.items():
        theta = np.array(setup.start, dtype=np.float64)
        path = [theta.copy()]
        for t in range(setup.iterations):
            step(theta, b * theta + noise[t])
            path.append(theta.copy())
        paths[name] = np.array(path)
    return paths


def losses(setup: QuadraticSetup, seeds: int, first_seed: int = 0) -> dict[str, Vector]:
    """Loss per iteration, ``(seeds, iterations + 1)`` per method."""
    result: dict[str, list[Vector]] = {name: [] for name in METHODS}
    for seed in range(first_seed, first_seed + seeds):
        for name, path in run(setup, seed).items():
            result[name].append(0.5 * np.sum(setup.curvature * path**2, axis=1))
    return {name: np.array(rows) for name, rows in result.items()}
