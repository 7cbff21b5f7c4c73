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

mu and tau are 0-d arrays and the cases are chosen with ``where``, never a Python branch
on their values, so that both shapes of the step (the engine and the pure step that
``jax.jit`` traces, ``core/functional.py``) compute Eq (7) with these same functions.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .types import Array, Namespace


def damping_tau(
    xp: Namespace, mu: Array, tau0: float, sigma_low: float, sigma_high: float
) -> Array:
    """The damping coefficient tau of Eq (7) for the curvature ratio ``mu = s^T y / s^T s``
    (a 0-d array; NaN for a NaN mu)."""
    one = xp.ones_like(mu)
    # Each case's division, with a harmless denominator where the case does not apply; the
    # numerators are arrays because torch divides a Python number by a tensor through the
    # reciprocal, which rounds twice.
    low = one * (1.0 - sigma_low) / xp.where(mu < 1.0, 1.0 - mu, one)
    high = one * (sigma_high - 1.0) / xp.where(mu > 1.0, mu - 1.0, one)
    bound = xp.where(mu <= sigma_low, low, xp.where(mu >= sigma_high, high, one * tau0))
    return xp.where(mu == mu, xp.minimum(bound, one * tau0), mu)


def curvature_ratio(xp: Namespace, s_dot_y: Array, s_dot_s: Array) -> Array:
    """``mu = s^T y / s^T s`` (0-d arrays); NaN when s is zero or either product is not
    finite."""
    defined = xp.isfinite(s_dot_y) & xp.isfinite(s_dot_s) & (s_dot_s != 0.0)
    ratio = s_dot_y / xp.where(defined, s_dot_s, xp.ones_like(s_dot_s))
    return xp.where(defined, ratio, xp.full_like(ratio, float("nan")))


def damped_y(s: Array, y: Array, tau: Array) -> Array:
    """Eq (7)'s ``y_hat = tau * y + (1 - tau) * s``, in the pair's dtype."""
    xp = array_namespace(s, y)
    return xp.astype(tau, y.dtype) * y + xp.astype(1.0 - tau, s.dtype) * s


def damp(
    s: Array, y: Array, tau0: float, sigma_low: float, sigma_high: float
) -> tuple[Array, float]:
    """Eq (7): return ``(y_hat, tau)`` with ``y_hat = tau * y + (1 - tau) * s``.

    Raises ``ValueError`` when ``s^T s`` is zero or either vector is not finite, since
    then no tau can bound the curvature.
    """
    xp = array_namespace(s, y)
    wide = xp.float64  # mu as Python's floats computed it
    mu = curvature_ratio(xp, xp.astype(xp.vecdot(s, y), wide), xp.astype(xp.vecdot(s, s), wide))
    if bool(xp.isnan(mu)):
        raise ValueError("damp: s must be non-zero and s, y finite")
    tau = damping_tau(xp, mu, tau0, sigma_low, sigma_high)
    return damped_y(s, y, tau), float(tau)
