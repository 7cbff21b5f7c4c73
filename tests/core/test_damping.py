"""Eq (7): the damped pair's curvature lies in [sigma_low, sigma_high] and tau <= tau0, and
the library's branch-free tau (``where`` on 0-d arrays, so that ``jax.jit`` can trace it)
equals the case split as the paper writes it, in plain Python (:func:`reference_tau`).
Pairs that no tau can bound are refused, and a pair damped to zero curvature is rejected."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbfgs.backends import kernels_for
from mlbfgs.core import MLBFGSConfig, curvature_ratio, damp, damping_tau, prepare_pair


def reference_tau(mu: float, tau0: float, sigma_low: float, sigma_high: float) -> float:
    """Eq (7)'s tau with Python branches."""
    if mu <= sigma_low:
        return min((1.0 - sigma_low) / (1.0 - mu), tau0)
    if mu >= sigma_high:
        return min((sigma_high - 1.0) / (mu - 1.0), tau0)
    return tau0


def tau_of(mu: float, tau0: float, sigma_low: float, sigma_high: float) -> float:
    return float(damping_tau(np, np.asarray(mu), tau0, sigma_low, sigma_high))


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 30),
    s_scale=st.floats(-60, 60),
    y_scale=st.floats(-60, 60),
    sign=st.sampled_from([-1.0, 1.0]),
    tau0=st.floats(0.05, 1.0),
    sigma_low=st.floats(0.0, 0.99),
    sigma_high=st.floats(1.001, 100.0),
)
def test_damped_curvature_is_bounded(
    seed: int,
    n: int,
    s_scale: float,
    y_scale: float,
    sign: float,
    tau0: float,
    sigma_low: float,
    sigma_high: float,
) -> None:
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(n) * 10.0**s_scale
    # Negative curvature included: y anti-aligned with s half the time.
    y = sign * (np.abs(rng.standard_normal()) * s + rng.standard_normal(n) * 10.0**y_scale)
    y_hat, tau = damp(s, y, tau0, sigma_low, sigma_high)
    ratio = (s @ y_hat) / (s @ s)
    slack = 1e-9 * max(1.0, abs((s @ y) / (s @ s)))
    assert sigma_low - slack <= ratio <= sigma_high + slack
    assert 0.0 < tau <= tau0


@pytest.mark.parametrize(
    ("mu", "expected"),
    [
        (-1.0, (1 - 0.01) / 2.0),  # negative curvature: pulled up to sigma_low
        (0.005, (1 - 0.01) / (1 - 0.005)),  # just below sigma_low: less than tau0 = 1
        (0.015, 1.0),  # just above sigma_low: tau0
        (0.5, 1.0),  # inside the band: tau0
        (1.495, 1.0),  # just below sigma_high: tau0
        (1.505, (1.5 - 1) / (1.505 - 1)),  # just above sigma_high: less than tau0 = 1
        (11.0, 0.05),  # large curvature: pulled down to sigma_high
    ],
)
def test_damping_tau_cases(mu: float, expected: float) -> None:
    """With tau0 = 1 each of the three cases of Eq (7) gives a value the others do not,
    on both sides of each threshold."""
    assert tau_of(mu, 1.0, 0.01, 1.5) == pytest.approx(expected, rel=1e-15)
    # A smaller tau0 caps every case.
    assert tau_of(mu, 0.3, 0.01, 1.5) == pytest.approx(min(expected, 0.3), rel=1e-15)


@given(
    tau0=st.floats(0.05, 1.0),
    sigma_low=st.floats(0.0, 0.99),
    sigma_high=st.floats(1.001, 100.0),
)
def test_damping_tau_is_continuous_at_the_thresholds(
    tau0: float, sigma_low: float, sigma_high: float
) -> None:
    """At mu = sigma_L and mu = sigma_H the clipped formula equals tau0 (it is min(1, tau0)
    there), so whether a threshold itself belongs to the band or to the clipped case cannot
    change tau: mutating `<=` into `<` in damping_tau is an equivalent mutant."""
    for threshold in (sigma_low, sigma_high):
        assert tau_of(threshold, tau0, sigma_low, sigma_high) == tau0
        # Moving mu by d moves the clipped tau by about d / |1 - threshold| relative, and
        # |1 - threshold| >= 1e-3 here: below 1e-7 for d = 1e-12 max(1, threshold).
        for side in (-1.0, 1.0):
            near = threshold + side * 1e-12 * max(1.0, threshold)
            assert tau_of(near, tau0, sigma_low, sigma_high) == pytest.approx(tau0, rel=1e-6)


@given(
    st.floats(-10.0, 10.0),
    st.floats(0.05, 1.0),
    st.floats(0.0, 0.99),
    st.floats(1.01, 10.0),
)
def test_branch_free_tau_equals_the_case_split(
    mu: float, tau0: float, low: float, high: float
) -> None:
    assert tau_of(mu, tau0, low, high) == reference_tau(mu, tau0, low, high)


def test_tau_of_an_undefined_ratio_is_nan() -> None:
    assert np.isnan(tau_of(float("nan"), 0.99, 0.01, 1.5))


def test_damp_rejects_zero_s() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        damp(np.zeros(3), np.ones(3), 0.99, 0.01, 1.5)


def test_pair_whose_damped_y_underflows_is_rejected() -> None:
    """float16: s = 2^-24 and y = -3 s give mu = -3, tau = 0.2475 and a damped curvature of
    0.01, but y_hat = tau y + (1 - tau) s rounds to -2^-24 + 2^-24 = 0; gamma = s^T y_hat /
    y_hat^T y_hat would not exist, so the pair must be rejected rather than pushed."""
    s = np.full(4, 2.0**-24, dtype=np.float16)
    config = MLBFGSConfig(tau0=0.99, sigma_low=0.01, sigma_high=1.5)
    outcome = prepare_pair(kernels_for(np), s, -3 * s, config)
    assert outcome.mu == -3.0
    assert not outcome.accepted


def test_damp_refuses_what_no_tau_can_bound() -> None:
    message = "^damp: s must be non-zero and s, y finite$"
    for s, y in [
        (np.zeros(3), np.ones(3)),
        (np.ones(3), np.array([1.0, np.inf, 0.0])),
        (np.array([np.nan, 1.0, 0.0]), np.ones(3)),
    ]:
        with pytest.raises(ValueError, match=message):
            damp(s, y, 0.99, 0.01, 1.5)
    for s_dot_y, s_dot_s in [(math.inf, 1.0), (1.0, math.inf), (math.nan, 1.0), (1.0, 0.0)]:
        assert math.isnan(curvature_ratio(np, np.asarray(s_dot_y), np.asarray(s_dot_s)))
    assert curvature_ratio(np, np.asarray(-3.0), np.asarray(2.0)) == -1.5


def test_damped_pair_of_zero_curvature_is_rejected() -> None:
    """With sigma_low = 0 a pair of negative curvature is damped to s^T y_hat = 0
    (tau = 1 / (1 - mu)), which R of the compact form cannot invert: rejected."""
    s = np.array([1.0, 0.0, 0.0])
    y = np.array([-0.5, 1.0, 0.0])  # mu = -0.5
    kernels = kernels_for(np)
    config = MLBFGSConfig(tau0=0.9, sigma_low=0.0, sigma_high=2.0)
    outcome = prepare_pair(kernels, s, y, config)
    assert not outcome.accepted and outcome.mu == -0.5 and outcome.tau == pytest.approx(1 / 1.5)
    kept = prepare_pair(kernels, s, -y, config)
    assert kept.accepted  # mu = 0.5 > 0: kept


def test_a_curvature_ratio_of_one_divides_by_nothing() -> None:
    """mu = 1 (y = s: the identity's curvature) is no case of Eq (7) but tau0's: each case's
    division gets a harmless denominator there, so no division by zero is even computed
    (NumPy would warn, and the warning would be an error in a strict caller)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tau_of(1.0, 0.9, 0.0, 2.0) == 0.9
        assert tau_of(1.0, 0.9, 0.5, 1.5) == 0.9
