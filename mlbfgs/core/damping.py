"""Adaptive damping of a curvature pair, Eq (7).

.. math::
    \\hat y = \\tau y + (1-\\tau) s, \\qquad \\mu = \\frac{s^T y}{s^T s}, \\qquad
    \\tau = \\begin{cases}
        \\min\\left(\\frac{1-\\sigma_L}{1-\\mu}, \\tau_0\\right) & \\mu \\le \\sigma_L \\\\
        \\min\\left(\\frac{\\sigma_H-1}{\\mu-1}, \\tau_0\\right) & \\mu \\ge \\sigma_H \\\\
        \\tau_0 & \\text{otherwise}
    \\end{cases}

so that ``sigma_L <= s^T y_hat / s^T s <= sigma_H`` (Appendix A.2.4): every stored pair has
positive curvature and the inverse-Hessian approximation stays positive definite.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from .types import Array, Namespace


def damping_tau(mu: float, tau0: float, sigma_low: float, sigma_high: float) -> float:
    """The damping coefficient tau of Eq (7) for the curvature ratio ``mu = s^T y / s^T s``."""
    if mu <= sigma_low:
        return min((1.0 - sigma_low) / (1.0 - mu), tau0)
    if mu >= sigma_high:
        return min((sigma_high - 1.0) / (mu - 1.0), tau0)
    return tau0


def damping_tau_array(
    xp: Namespace, mu: Array, tau0: float, sigma_low: float, sigma_high: float
) -> Array:
    """:func:`damping_tau` of a 0-d array, without branching on its value (for
    ``jax.jit``; ``core/functional.py``): the same three cases, chosen with ``where``."""
    one = xp.ones_like(mu)
    low = xp.where(mu <= sigma_low, (1.0 - sigma_low) / xp.where(mu < 1.0, 1.0 - mu, one), one)
    high = xp.where(mu >= sigma_high, (sigma_high - 1.0) / xp.where(mu > 1.0, mu - 1.0, one), one)
    bound = xp.where(mu <= sigma_low, low, xp.where(mu >= sigma_high, high, one * tau0))
    return xp.minimum(bound, one * tau0)


def curvature_ratio(s_dot_y: float, s_dot_s: float) -> float:
    """``mu = s^T y / s^T s``; NaN when s is zero or either product is not finite."""
    if not (math.isfinite(s_dot_s) and math.isfinite(s_dot_y)) or s_dot_s == 0.0:
        return math.nan
    return s_dot_y / s_dot_s


def damp(
    s: Array, y: Array, tau0: float, sigma_low: float, sigma_high: float
) -> tuple[Array, float]:
    """Eq (7): return ``(y_hat, tau)`` with ``y_hat = tau * y + (1 - tau) * s``.

    Raises ``ValueError`` when ``s^T s`` is zero or either vector is not finite, since
    then no tau can bound the curvature.
    """
    xp = array_namespace(s, y)
    mu = curvature_ratio(float(xp.vecdot(s, y)), float(xp.vecdot(s, s)))
    if math.isnan(mu):
        raise ValueError("damp: s must be non-zero and s, y finite")
    return damp_with_ratio(s, y, mu, tau0, sigma_low, sigma_high)


def damp_with_ratio(
    s: Array, y: Array, mu: float, tau0: float, sigma_low: float, sigma_high: float
) -> tuple[Array, float]:
    """Eq (7) for a pair whose ``mu = s^T y / s^T s`` is already known."""
    tau = damping_tau(mu, tau0, sigma_low, sigma_high)
    return tau * y + (1.0 - tau) * s, tau
