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
from .damping import curvature_ratio, damp_with_ratio
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


def mix_with_newest(
    s: Array, y: Array, newest: tuple[Array, Array], pair_momentum: float
) -> tuple[Array, Array]:
    """The released code's "double momentum", before damping (in place on the new pair):
    ``s <- (1-m) s + m s_prev`` and ``y <- (1-m) y + m y_hat_prev``, the newest stored pair."""
    s_prev, y_hat_prev = newest
    s *= 1.0 - pair_momentum
    s += pair_momentum * s_prev
    y *= 1.0 - pair_momentum
    y += pair_momentum * y_hat_prev
    return s, y


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
    """Damp (Eq (7)) a raw pair, or pass it through undamped; reject pairs that are
    zero-length, non-finite or without positive curvature."""
    mu = curvature_ratio(float(kernels.dot(s, y)), float(kernels.dot(s, s)))
    if math.isnan(mu):
        return CurvatureOutcome(None, None, mu, math.nan)
    if damping:
        y_hat, tau = damp_with_ratio(s, y, mu, tau0, sigma_low, sigma_high)
        curvature = mu * tau + 1.0 - tau  # s^T y_hat / s^T s (Appendix A.2.4)
    else:
        y_hat, tau, curvature = y, 1.0, mu
    # Curvature must be positive beyond rounding, or R of the compact form is singular:
    # this rejects non-positive pairs when undamped (ablations) or with sigma_low = 0.
    if curvature <= float(kernels.xp.finfo(s.dtype).eps):
        return CurvatureOutcome(None, None, mu, tau)
    # gamma = s^T y_hat / y_hat^T y_hat must exist: y_hat^T y_hat finite and > 0. It is > 0
    # in exact arithmetic here, but in half precision y_hat may underflow to zero.
    y_dot_y = float(kernels.dot(y_hat, y_hat))
    if not (math.isfinite(y_dot_y) and y_dot_y > 0.0):
        return CurvatureOutcome(None, None, mu, tau)
    return CurvatureOutcome(s, y_hat, mu, tau)
