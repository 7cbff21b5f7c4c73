"""Tolerances derived from the conditioning of what is compared (docs/testing.md).

Two float64 computations of the same mathematics (the optimizer's compact form, ring
buffer and in-place kernels; the plain-loop reference) differ by their rounding errors,
amplified by how sensitive the result is to such errors. That sensitivity is measured
on each example, not assumed: the reference is run again with every input it reads
perturbed by a relative ``eps * U(-1, 1)`` (one unit of rounding), and the spread of the
results is the response to one rounding per input. Each computation commits at most
:func:`rounding_units` roundings per input along its longest chain of dependent
operations, and the response is linear in the perturbation while it is this small (first
order), so the two results may differ by up to ``rounding_units * spread``; bugs give
differences many orders of magnitude larger.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EPS = float(np.finfo(np.float64).eps)
PERTURBATIONS = (1, 2)
"""Seeds of the perturbed runs; the spread is the largest deviation of any of them."""
GROWTH_BOUND = 10.0
"""A trajectory whose largest |theta| so far exceeds this many times the largest initial
|theta| is diverging; those steps are not compared elementwise (see ``compare_tame``)."""


def log(what: str, ratio: float, units: float) -> None:
    """With ``MLBFGS_TOLERANCE_LOG`` set, append the gap in spreads and the allowance
    (``units``) of one comparison to that file: how docs/testing.md measures the margin."""
    path = os.environ.get("MLBFGS_TOLERANCE_LOG")
    if path:
        with open(path, "a") as out:
            out.write(f"{what.split(' after ')[0]}\t{ratio:.3g}\t{units:g}\n")


def rounding_units(n: int, m: int) -> float:
    """Roundings per input along the longest dependent chain, for both computations.

    Per step and per block of n entries with m stored pairs: an inner product of length n
    rounds up to n times (Higham, *Accuracy and Stability*, eq. (3.5)); the two-loop
    recursion chains 4m dependent vector updates, the compact form two products of
    lengths n and 2m; weight decay, Eq (5), heavy ball, Eq (7) and Eq (2) add a few more
    (8). Two computations: twice that.
    """
    return 2.0 * (n + 4 * m + 8)


def perturb(values: np.ndarray, rng: np.random.Generator, eps: float = EPS) -> np.ndarray:
    """``values * (1 + eps * U(-1, 1))`` elementwise: one rounding of each entry (``eps``
    of the dtype whose rounding is modelled; float64 by default)."""
    return values * (1.0 + eps * rng.uniform(-1.0, 1.0, np.shape(values)))


def flat(params: Sequence[Any]) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in params])


GradientFn = Callable[[int, list[np.ndarray]], list[np.ndarray]]


def recording(
    gradient: GradientFn, path: list[np.ndarray], seed: int | None = None, eps: float = EPS
) -> GradientFn:
    """``gradient`` that appends the parameters it is called with to ``path``; with a
    ``seed`` it first perturbs those parameters in place (the caller's own state: the
    rounding of the last step's result) and then the gradient (the rounding of the data)."""

    def wrapped(t: int, params: list[np.ndarray]) -> list[np.ndarray]:
        if seed is not None:
            rng = np.random.default_rng([seed, t])
            for p in params:
                p[...] = perturb(p, rng, eps)
        path.append(flat(params))
        grads = gradient(t, params)
        if seed is None:
            return grads
        rng = np.random.default_rng([seed, t, 1])
        return [perturb(np.asarray(g), rng, eps) for g in grads]

    return wrapped


Run = Callable[[GradientFn], Sequence[Any]]


def path_of(
    run: Run, gradient: GradientFn, seed: int | None = None, eps: float = EPS
) -> np.ndarray:
    """``(steps + 1, n)``: the parameters at every step of ``run`` (which returns the
    final parameters), perturbed as in :func:`recording` if ``seed`` is given."""
    path: list[np.ndarray] = []
    with np.errstate(all="ignore"):
        final = run(recording(gradient, path, seed, eps))
    return np.asarray([*path, flat(final)])


def spread(run: Run, gradient: GradientFn, reference: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Per step, the largest deviation from ``reference`` (a path) of ``run`` under the
    perturbations of :data:`PERTURBATIONS`."""
    worst = np.zeros(len(reference))
    for seed in PERTURBATIONS:
        path = path_of(run, gradient, seed, eps)
        deviation = np.max(np.abs(path - reference), axis=1)
        worst = np.fmax(worst, np.where(np.isnan(deviation), np.inf, deviation))
    return worst


def joint_spread(
    gradient: GradientFn, eps: float, *computations: tuple[Run, np.ndarray]
) -> np.ndarray:
    """Per step, the largest :func:`spread` of several ``(run, path)`` computations of the
    same mathematics.

    Each computation commits its own roundings, and their sensitivity to them need not be
    alike: the optimizer's compact form solves with ``R = triu(S^T Y)``, which amplifies a
    rounding of the pairs by up to cond(H) (beyond 1e6 for T = 1 and noisy pairs), while the
    reference's two-loop recursion never forms R. Measuring only the reference's response
    misses that source; the spread of each computation is its response to its own rounding.
    """
    spreads = [spread(run, gradient, path, eps) for run, path in computations]
    return np.asarray(np.fmax.reduce(spreads))


def compare_tame(
    got: np.ndarray,
    want: np.ndarray,
    deviation: np.ndarray,
    units: float,
    what: str,
    eps: float = EPS,
) -> int:
    """Compare two ``(steps, n)`` paths step by step while the reference is tame.

    Step t is compared while the largest |theta| of the reference so far stays within
    :data:`GROWTH_BOUND` of the start; there ``|got - want| <= units * max(spread,
    eps * scale)``, ``scale`` the largest |theta| so far (rounding is relative to the
    magnitudes computed with, not to a value that cancelled). Once the reference
    diverges past the bound, the optimizer must diverge at the same step. Returns the
    number of steps compared.
    """
    scale = np.maximum.accumulate(np.max(np.abs(want), axis=1))
    tame = scale <= GROWTH_BOUND * scale[0]
    compared = int(np.argmin(tame)) if not tame.all() else len(tame)
    worst = 0.0
    for t in range(compared):
        error = float(np.max(np.abs(got[t] - want[t])))
        tolerance = units * max(float(deviation[t]), eps * float(scale[t]))
        worst = max(worst, error / tolerance * units)
        assert error <= tolerance, (
            f"{what}: step {t + 1}: |optimizer - reference| = {error:.3g} > {tolerance:.3g} "
            f"({units:g} x the spread {deviation[t]:.3g} of eps-perturbed reference runs)"
        )
    log(what, worst, units)
    if compared < len(tame):  # the reference diverged at step `compared + 1`: so must we
        peak = float(np.max(np.abs(got[: compared + 1])))
        assert peak > GROWTH_BOUND * scale[0] * (1 - 1e-6), (
            f"{what}: the reference diverged at step {compared + 1}, the optimizer did not"
        )
    return compared


def result_spread(
    compute: Callable[..., np.ndarray], *inputs: np.ndarray, eps: float = EPS
) -> float:
    """The largest deviation of ``compute(*inputs)`` when every input entry is perturbed by
    one rounding (seeds :data:`PERTURBATIONS`): the result's sensitivity to rounding."""
    exact = compute(*inputs)
    worst = 0.0
    for seed in PERTURBATIONS:
        rng = np.random.default_rng([seed, 7])
        moved = compute(*(perturb(x, rng, eps) for x in inputs))
        worst = max(worst, float(np.max(np.abs(moved - exact))))
    return worst


def assert_within_spread(
    actual: Any, expected: Any, deviation: float, units: float, what: str, eps: float = EPS
) -> None:
    """Norm-wise: ``max|actual - expected| <= units * max(spread, eps * max|expected|)``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = float(np.max(np.abs(expected), initial=0.0))
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    tolerance = units * max(deviation, eps * scale)
    log(what, error / tolerance * units, units)
    assert error <= tolerance, (
        f"{what}: error {error:.3g} > {tolerance:.3g} ({units:g} x spread {deviation:.3g}, "
        f"scale {scale:.3g})"
    )


def trajectory_eps(eps: float, hessian_momentum: float) -> float:
    """The rounding to inject per step into a trajectory: ``eps / (1 - beta)``.

    The momentum averages of Eq (5) are rounded in place at every step by about
    ``eps |M|``, and M is close to theta; but a perturbation of theta reaches M scaled by
    ``1 - beta``. So a step's inputs are perturbed by ``eps / (1 - beta)`` to account for
    the averages' own rounding (the same 1 / (1 - beta) amplification docs/backends.md
    measures); it overstates the rounding of everything else, which only widens the
    tolerance. The same holds for any average the step keeps in place (the RMS of
    ``h0="adam"``): pass the largest decay.
    """
    return eps / (1.0 - hessian_momentum)
