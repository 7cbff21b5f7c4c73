"""Curvature pairs from the momentum averages every T steps, Eq (6).

.. math::
    s_k = M_{\\theta_{(k+1)T}} - M_{\\theta_{kT}}, \\qquad
    y_k = M_{g_{(k+1)T}} - M_{g_{kT}}

The pair is then damped by Eq (7), or, with damping switched off for ablations, kept only
if it has clearly positive curvature. A pair that could make the approximation indefinite
or non-finite is rejected and counted instead of pushed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .averages import MomentumAverages
from .damping import curvature_ratio, damping_tau
from .kernels import Kernels
from .types import Array


@dataclass(frozen=True)
class CurvatureOutcome:
    """What happened at one curvature boundary: the pair to push (if any), mu and tau."""

    s: Array | None
    y_hat: Array | None
    mu: float
    tau: float

    @property
    def accepted(self) -> bool:
        return self.s is not None


def curvature_pair(averages: MomentumAverages) -> tuple[Array, Array]:
    """Eq (6): the change of the momentum averages since the last boundary."""
    assert averages.snapshot_theta is not None and averages.snapshot_grad is not None
    return averages.theta - averages.snapshot_theta, averages.grad - averages.snapshot_grad


def prepare_pair(
    kernels: Kernels,
    s: Array,
    y: Array,
    *,
    damping: bool,
    tau0: float,
    sigma_low: float,
    sigma_high: float,
) -> CurvatureOutcome:
    """Damp (Eq (7)) or filter a raw pair; reject zero-length or non-finite pairs."""
    mu = curvature_ratio(float(kernels.dot(s, y)), float(kernels.dot(s, s)))
    if math.isnan(mu):
        return CurvatureOutcome(None, None, mu, math.nan)
    if damping:
        tau = damping_tau(mu, tau0, sigma_low, sigma_high)
        y_hat = tau * y + (1.0 - tau) * s
    else:
        # Undamped (ablation): keep only pairs whose curvature is positive beyond rounding.
        tau, y_hat = 1.0, y
        if mu <= float(kernels.xp.finfo(s.dtype).eps):
            return CurvatureOutcome(None, None, mu, tau)
    # gamma = s^T y_hat / y_hat^T y_hat must exist: y_hat^T y_hat finite (it is > 0 here).
    if not math.isfinite(float(kernels.dot(y_hat, y_hat))):
        return CurvatureOutcome(None, None, mu, tau)
    return CurvatureOutcome(s, y_hat, mu, tau)
