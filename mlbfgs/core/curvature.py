"""Curvature pairs from the momentum averages every T steps, Eq (6).

.. math::
    s_k = M_{\\theta_{(k+1)T}} - M_{\\theta_{kT}}, \\qquad
    y_k = M_{g_{(k+1)T}} - M_{g_{kT}}

The pair is then damped by Eq (7), or, with damping switched off for ablations, kept only
if it has clearly positive curvature. A pair that could make the approximation indefinite
or non-finite is rejected and counted instead of pushed.

Every function here returns new arrays and decides with ``where``: both shapes of the step
call them, the engine (``algorithm.py``, which then branches on ``accepted``) and the pure
step (``pure_pairs.py``, which selects with it).
"""

from __future__ import annotations

from typing import NamedTuple

from .config import MLBFGSConfig
from .damping import curvature_ratio, damped_y, damping_tau
from .kernels import Kernels
from .types import Array


class CurvatureOutcome(NamedTuple):
    """One pair after Eq (7): y_hat, mu, tau, and whether it may be pushed (0-d arrays;
    mu and tau NaN when s is zero or the pair is not finite)."""

    y_hat: Array
    mu: Array
    tau: Array
    accepted: Array


def curvature_pair(
    average_theta: Array, average_grad: Array, snapshot_theta: Array, snapshot_grad: Array
) -> tuple[Array, Array]:
    """Eq (6): the change of the momentum averages since the last boundary."""
    return average_theta - snapshot_theta, average_grad - snapshot_grad


def mix_with_newest(
    s: Array, y: Array, newest_s: Array, newest_y_hat: Array, pair_momentum: float
) -> tuple[Array, Array]:
    """The released code's "double momentum", before damping: ``s <- (1-m) s + m s_prev``
    and ``y <- (1-m) y + m y_hat_prev``, with the newest stored pair."""
    keep = 1.0 - pair_momentum
    return s * keep + pair_momentum * newest_s, y * keep + pair_momentum * newest_y_hat


def prepare_pair(kernels: Kernels, s: Array, y: Array, config: MLBFGSConfig) -> CurvatureOutcome:
    """Damp (Eq (7), with ``config``'s tau0, sigma_low and sigma_high) a raw pair, or pass it
    through undamped (``damping=False``); accept it only if s is non-zero, the pair finite
    and its curvature positive beyond rounding.

    The products are taken in ``kernels.gram_dtype`` (float64 unless the library has
    none), where the compact form's small algebra is done.
    """
    xp, gram = kernels.xp, kernels.gram_dtype
    s_dot_y = xp.astype(kernels.dot(s, y), gram)
    mu = curvature_ratio(xp, s_dot_y, xp.astype(kernels.dot(s, s), gram))
    if config.damping:
        tau = damping_tau(xp, mu, config.tau0, config.sigma_low, config.sigma_high)
        y_hat = damped_y(s, y, tau)
        curvature = mu * tau + 1.0 - tau  # s^T y_hat / s^T s (Appendix A.2.4)
    else:
        tau = xp.where(xp.isnan(mu), mu, xp.ones_like(mu))
        y_hat, curvature = y, mu
    # Curvature must be positive beyond rounding, or R of the compact form is singular:
    # this rejects non-positive pairs when undamped (ablations) or with sigma_low = 0.
    # gamma = s^T y_hat / y_hat^T y_hat must exist too: y_hat^T y_hat finite and > 0. It
    # is > 0 in exact arithmetic here, but in half precision y_hat may underflow to zero.
    y_dot_y = kernels.dot(y_hat, y_hat)
    accepted = (curvature > float(xp.finfo(s.dtype).eps)) & xp.isfinite(y_dot_y) & (y_dot_y > 0.0)
    return CurvatureOutcome(y_hat, mu, tau, accepted)
