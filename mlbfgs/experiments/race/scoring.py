"""AlgoPerf's scoring (scoring/performance_profile.py), as small pure functions.

``times`` is an (optimizers x workloads) array of times to target (steps or seconds;
``inf`` where the target was missed). Per workload each time is divided by the best
one; a ratio above ``max_tau`` counts as missed (inf), and a workload every optimizer
missed gives NaN ratios (inf / inf), which count as missed for everyone, as in
AlgoPerf, whose pandas arithmetic does the same. The performance profile rho(tau) is
the share of all workloads with ratio <= tau; the score B is its trapezoid integral
over [1, max_tau] divided by max_tau - 1, so B is in [0, 1]: 1 means fastest on every
workload.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def taus(max_tau: float = 4.0, points: int = 100) -> Array:
    """The grid of tau on which profiles are evaluated: ``linspace(1, max_tau, points)``."""
    return np.linspace(1.0, max_tau, points)


def ratios(times: npt.ArrayLike, max_tau: float = 4.0) -> Array:
    """Each time over the best time on its workload (column); above ``max_tau``: inf."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 2 or t.size == 0:
        raise ValueError(f"times must be a non-empty (optimizers x workloads) array, got {t.shape}")
    if np.isnan(t).any() or (t <= 0).any():
        raise ValueError("times must be > 0 (inf for a missed target), not NaN")
    with np.errstate(invalid="ignore"):
        r = t / t.min(axis=0, keepdims=True)
    r[r > max_tau] = np.inf
    return r


def profile(r: npt.ArrayLike, tau: npt.ArrayLike) -> Array:
    """rho: (optimizers x len(tau)), the share of workloads with ratio <= tau."""
    r = np.asarray(r, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    return (r[:, :, None] <= tau[None, None, :]).sum(axis=1) / r.shape[1]


def score(rho: npt.ArrayLike, tau: npt.ArrayLike) -> Array:
    """B per optimizer: the trapezoid integral of rho over tau, over the span of tau."""
    rho = np.asarray(rho, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    area = ((rho[:, 1:] + rho[:, :-1]) / 2.0 * np.diff(tau)).sum(axis=1)
    return area / (tau[-1] - tau[0])


def benchmark(times: npt.ArrayLike, max_tau: float = 4.0, points: int = 100) -> tuple[Array, Array]:
    """(rho, B) of ``times``, on ``taus(max_tau, points)``."""
    tau = taus(max_tau, points)
    rho = profile(ratios(times, max_tau), tau)
    return rho, score(rho, tau)
