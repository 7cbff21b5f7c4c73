"""Algorithm 2 (two_loop), the dense BFGS recursion of Eq (4), and the compact form agree,
within the rounding the inputs' conditioning allows (tests/support/conditioning.py); and what can be
proved about H's eigenvalues after damping holds; without pairs the recursion is H_0."""

from __future__ import annotations

import re

import conditioning
import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

from mlbfgs.core import CurvatureHistory, Kernels, compact_form, damp, precondition, two_loop
from mlbfgs.core.types import Array

xp = __import__("array_api_compat").array_namespace(np.ones(1))


def random_pairs(seed: int, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """m pairs with s^T y > 0 (y = A s + small perturbation, A SPD)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    a = a @ a.T / n + np.eye(n)
    s = rng.standard_normal((m, n))
    y = s @ a + 0.1 * rng.standard_normal((m, n))
    keep = np.einsum("ij,ij->i", s, y) > 0
    return s[keep], y[keep]


def dense_bfgs(s_hist: np.ndarray, y_hist: np.ndarray, gamma: float) -> np.ndarray:
    """Eq (4) applied to H_0 = gamma I, pair by pair, oldest first."""
    n = s_hist.shape[1]
    h = gamma * np.eye(n)
    for s, y in zip(s_hist, y_hist, strict=True):
        rho = 1.0 / (y @ s)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def history_of(s_hist: np.ndarray, y_hist: np.ndarray, capacity: int) -> CurvatureHistory:
    history = CurvatureHistory.empty(xp, capacity, s_hist.shape[1], s_hist.dtype, "cpu")
    for s, y in zip(s_hist, y_hist, strict=True):
        history.push(s, y, Kernels(xp))
    return history


def compact_product(history: CurvatureHistory, g: Array) -> Array:
    kernels = Kernels(xp)
    projection = kernels.project(history.pairs, g)
    return precondition(history, compact_form(xp, history), g, projection, kernels)


def compact_of(g: np.ndarray, s_hist: np.ndarray, y_hist: np.ndarray) -> np.ndarray:
    """The compact form's H g for these pairs (oldest first), built from scratch."""
    return compact_product(history_of(s_hist, y_hist, len(s_hist)), g)


def both_spreads(g: np.ndarray, s_hist: np.ndarray, y_hist: np.ndarray) -> float:
    """The spread of both computations of H g: the compact form (explicit R^-1) is less
    stable than the two-loop recursion when R is ill-conditioned, and its own spread
    under one rounding of every input measures how much (docs/testing.md)."""
    return max(
        conditioning.result_spread(two_loop, g, s_hist, y_hist),
        conditioning.result_spread(compact_of, g, s_hist, y_hist),
    )


seeds = st.integers(0, 2**32 - 1)


def dense_units(n: int, m: int) -> float:
    """Roundings per entry of Eq (4) applied densely: each pair multiplies H by V on both
    sides (two products of length n) and the result by g (one more)."""
    return conditioning.rounding_units(2 * n * m + n, m)


@given(seed=seeds, m=st.integers(1, 8), n=st.integers(2, 24))
def test_two_loop_equals_dense_bfgs(seed: int, m: int, n: int) -> None:
    s_hist, y_hist = random_pairs(seed, m, n)
    assume(len(s_hist) > 0)
    g = np.random.default_rng(seed + 1).standard_normal(n)
    gamma = float(s_hist[-1] @ y_hist[-1] / (y_hist[-1] @ y_hist[-1]))
    for h0 in (None, 1.0):
        deviation = conditioning.result_spread(
            lambda g_, s_, y_, h0=h0: two_loop(g_, s_, y_, h0), g, s_hist, y_hist
        )
        expected = dense_bfgs(s_hist, y_hist, gamma if h0 is None else h0) @ g
        units = dense_units(n, len(s_hist))
        got = two_loop(g, s_hist, y_hist, h0)
        conditioning.assert_within_spread(got, expected, deviation, units, f"H_0={h0}")


@given(seed=seeds, m=st.integers(1, 8), n=st.integers(2, 40), extra=st.integers(0, 6))
def test_compact_form_equals_two_loop(seed: int, m: int, n: int, extra: int) -> None:
    """Also after the ring buffer wrapped: only the newest `capacity` pairs count."""
    s_hist, y_hist = random_pairs(seed, m + extra, n)
    capacity = max(1, min(m, len(s_hist)))
    history = history_of(s_hist, y_hist, capacity)
    g = np.random.default_rng(seed + 2).standard_normal(n)
    kept = (s_hist[-capacity:], y_hist[-capacity:])
    expected = two_loop(g, *kept)
    deviation = both_spreads(g, *kept)
    units = conditioning.rounding_units(n, capacity)
    conditioning.assert_within_spread(
        compact_product(history, g), expected, deviation, units, "H g"
    )
    event(f"ring wrapped: {len(s_hist) > capacity}")
    event(f"pairs kept: {'several' if capacity > 1 else 'one'}")
    newest_s, newest_y = history.chronological(xp)
    np.testing.assert_array_equal(newest_s, s_hist[-capacity:])
    np.testing.assert_array_equal(newest_y, y_hist[-capacity:])


@given(seed=seeds, m=st.integers(1, 6), n=st.integers(3, 30), negative=st.booleans())
def test_secant_condition_and_positive_definite_after_damping(
    seed: int, m: int, n: int, negative: bool
) -> None:
    """H y_hat_newest = s_newest, and v^T H v > 0, also from negative-curvature pairs."""
    assume(n >= 2 * m)  # as in training, n >> m
    s_hist, y_hist = random_pairs(seed, m, n)
    assume(len(s_hist) > 0)
    if negative:  # curvature of the wrong sign, as a non-convex loss can produce
        y_hist = -y_hist
    damped = [damp(s, y, 0.99, 0.01, 1.5) for s, y in zip(s_hist, y_hist, strict=True)]
    y_hat = np.stack([pair for pair, _ in damped])
    history = history_of(s_hist, y_hat, len(s_hist))
    # H y_hat_newest = s_newest in exact arithmetic; in floating point within the spread
    # of H y_hat_newest under one rounding of every input.
    deviation = both_spreads(y_hat[-1], s_hist, y_hat)
    units = conditioning.rounding_units(n, m)
    got = compact_product(history, y_hat[-1])
    conditioning.assert_within_spread(got, s_hist[-1], deviation, units, "secant")
    h = dense_bfgs(s_hist, y_hat, float(s_hist[-1] @ y_hat[-1] / (y_hat[-1] @ y_hat[-1])))
    assert np.linalg.eigvalsh((h + h.T) / 2).min() > 0
    v = np.random.default_rng(seed + 3).standard_normal(n)
    assert v @ compact_product(history, v) > 0


def test_two_loop_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="s_hist and y_hist"):
        two_loop(np.ones(3), np.ones((2, 3)), np.ones((2, 4)))


def test_compact_form_keeps_float32() -> None:
    """No silent float64 copy of the history: the product comes back in float32."""
    s_hist, y_hist = random_pairs(3, 4, 16)
    history = history_of(s_hist.astype(np.float32), y_hist.astype(np.float32), 4)
    g = np.ones(16, dtype=np.float32)
    out = compact_product(history, g)
    assert out.dtype == np.float32
    expected = two_loop(g.astype(np.float64), s_hist, y_hist)
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=1e-5)


# -- eigenvalues of H after damping ------------------------------------------------------------
#
# Damping (Eq (7)) bounds each pair's curvature along s: sigma_L <= s^T y_hat / s^T s <=
# sigma_H. That alone gives (exact arithmetic):
#   (a) H is symmetric positive definite (every pair has s^T y_hat > 0);
#   (b) H_0 = gamma I with 0 < gamma <= 1 / sigma_L (Cauchy-Schwarz on the newest pair:
#       y_hat^T y_hat >= (s^T y_hat)^2 / s^T s);
#   (c) on the orthogonal complement of span{s_i, y_hat_i}, H = gamma I;
#   (d) with one pair, lambda_max(H) <= 2 / sigma_L: with |s| = 1, y_hat = mu s + b w
#       (w a unit vector orthogonal to s), B = H^-1 restricted to the plane (s, w) is
#       [[mu, b], [b, (mu^2 + 2 b^2) / mu]], so det = mu^2 + b^2, trace = 2 det / mu and
#       lambda_min(B) >= det / trace = mu / 2; off the plane H = gamma <= 1 / mu by (b).
# It does not bound y_hat's component orthogonal to s, so no lower bound on H's eigenvalues
# and, from two pairs on, no upper bound holds without one: the bound [1/sigma_H,
# (M+1)/sigma_L] quoted in docs/algorithm.md needs ||y_hat||^2 / s^T y_hat bounded too (the
# Lipschitz assumption of the paper's analysis). test_eigenvalue_bound_needs_bounded_y_hat
# shows the counterexample.

SIGMA_LOW, SIGMA_HIGH = 0.01, 1.5


def damped_band_pairs(seed: int, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """m pairs with s^T y_hat / s^T s anywhere in [sigma_L, sigma_H] and an orthogonal part
    of y_hat from 1e-2 to 1e2 times |s|: all that damping guarantees, nothing more."""
    rng = np.random.default_rng(seed)
    s_hist = rng.standard_normal((m, n))
    y_hist = []
    for s in s_hist:
        w = rng.standard_normal(n)
        w -= (w @ s) / (s @ s) * s
        stretch = 10.0 ** rng.uniform(-2.0, 2.0) * np.linalg.norm(s) / np.linalg.norm(w)
        y_hist.append(rng.uniform(SIGMA_LOW, SIGMA_HIGH) * s + stretch * w)
    return s_hist, np.array(y_hist)


@given(seed=seeds, m=st.integers(1, 4), n=st.integers(2, 12))
def test_what_damping_proves_about_h(seed: int, m: int, n: int) -> None:
    s_hist, y_hat = damped_band_pairs(seed, m, n)
    mu = np.einsum("ij,ij->i", s_hist, y_hat) / np.einsum("ij,ij->i", s_hist, s_hist)
    assert np.all((mu >= SIGMA_LOW * (1 - 1e-12)) & (mu <= SIGMA_HIGH * (1 + 1e-12)))
    history = history_of(s_hist, y_hat, m)
    gamma = compact_form(xp, history).gamma
    assert 0.0 < gamma <= 1.0 / SIGMA_LOW * (1 + 1e-12)  # (b)
    h = dense_bfgs(s_hist, y_hat, gamma)
    # (a), on the part of the spectrum float64 resolves: eigenvalues are computed to about
    # eps * ||H||, so only those above that are asserted positive.
    eigenvalues = np.linalg.eigvalsh((h + h.T) / 2)
    assert eigenvalues.min() > -64 * n * conditioning.EPS * np.abs(eigenvalues).max()
    if 2 * m < n:  # (c): the compact form applies gamma on the complement of the span
        basis = np.linalg.qr(np.concatenate([s_hist, y_hat]).T, mode="complete")[0][:, 2 * m :]
        z = basis @ np.random.default_rng(seed + 5).standard_normal(n - 2 * m)
        conditioning.assert_within_spread(
            compact_product(history, z),
            gamma * z,
            both_spreads(z, s_hist, y_hat),
            conditioning.rounding_units(n, m),
            "complement",
        )
    if m == 1:  # (d)
        assert eigenvalues.max() <= 2.0 / mu[0] * (1 + 1e-9) <= 2.0 / SIGMA_LOW * (1 + 1e-9)


def test_eigenvalue_bound_needs_bounded_y_hat() -> None:
    """Pairs inside the damping band (mu = 0.02) whose y_hat has a large part orthogonal
    to s: lambda_max(H) exceeds (M+1)/sigma_L by orders of magnitude, and lambda_min(H)
    falls far below 1/sigma_H. docs/algorithm.md states [1/sigma_H, (M+1)/sigma_L] without
    the bound on ||y_hat||^2 / s^T y_hat that it needs."""
    s_hist = np.array([[1.0, 0.0, 0.0], [1.0, 5.0, 0.0]])
    for y_hat, check in (
        (np.array([[0.02, 100.0, 0.0], [0.02, 0.1, 0.0]]), "upper"),
        (np.array([[0.02, 0.0, 0.0], [0.02, 0.1, 100.0]]), "lower"),
    ):
        mu = np.einsum("ij,ij->i", s_hist, y_hat) / np.einsum("ij,ij->i", s_hist, s_hist)
        np.testing.assert_allclose(mu, 0.02, rtol=1e-12)
        gamma = float(s_hist[-1] @ y_hat[-1] / (y_hat[-1] @ y_hat[-1]))
        eigenvalues = np.linalg.eigvalsh(dense_bfgs(s_hist, y_hat, gamma))
        assert eigenvalues.min() > 0  # still positive definite: (a) holds
        if check == "upper":
            assert eigenvalues.max() > 1e3 * (len(s_hist) + 1) / SIGMA_LOW
        else:
            assert eigenvalues.min() < 1e-3 / SIGMA_HIGH


def test_half_precision_coefficients_are_not_narrowed_to_half() -> None:
    """A float16 history of one short pair (s = y = 1e-4 per entry, so H = I) has
    compact-form coefficients of +-1e5 for g = 10, beyond float16's 65504: they stay
    float32, so H g = g."""
    s = np.full((1, 10), 1e-4, dtype=np.float16)
    history = history_of(s, s.copy(), 2)
    g = np.full(10, 10.0, dtype=np.float16)
    out = compact_product(history, g)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float64), g.astype(np.float64), atol=2e-2)


def test_two_loop_without_pairs_is_h0() -> None:
    g = np.array([1.0, -2.0, 0.5])
    empty = np.zeros((0, 3))
    np.testing.assert_array_equal(two_loop(g, empty, empty), g)
    np.testing.assert_array_equal(two_loop(g, empty, empty, gamma=0.3), 0.3 * g)
    message = (
        "two_loop: s_hist and y_hist must both have shape (m, n) with n = g.shape[0], "
        "got (2, 3), (2, 4) and g (3,)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        two_loop(g, np.ones((2, 3)), np.ones((2, 4)))
