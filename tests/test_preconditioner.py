"""Algorithm 2 (two_loop), the dense BFGS recursion of Eq (4), and the compact form agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
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
    return precondition(history, compact_form(xp, history), g, history.pairs @ g, kernels)


seeds = st.integers(0, 2**32 - 1)


@given(seed=seeds, m=st.integers(1, 8), n=st.integers(2, 24))
def test_two_loop_equals_dense_bfgs(seed: int, m: int, n: int) -> None:
    s_hist, y_hist = random_pairs(seed, m, n)
    g = np.random.default_rng(seed + 1).standard_normal(n)
    gamma = float(s_hist[-1] @ y_hist[-1] / (y_hist[-1] @ y_hist[-1]))
    expected = dense_bfgs(s_hist, y_hist, gamma) @ g
    np.testing.assert_allclose(two_loop(g, s_hist, y_hist), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        two_loop(g, s_hist, y_hist, gamma=1.0),
        dense_bfgs(s_hist, y_hist, 1.0) @ g,
        rtol=1e-10,
        atol=1e-12,
    )


@given(seed=seeds, m=st.integers(1, 8), n=st.integers(2, 40), extra=st.integers(0, 6))
def test_compact_form_equals_two_loop(seed: int, m: int, n: int, extra: int) -> None:
    """Also after the ring buffer wrapped: only the newest `capacity` pairs count."""
    s_hist, y_hist = random_pairs(seed, m + extra, n)
    capacity = max(1, min(m, len(s_hist)))
    history = history_of(s_hist, y_hist, capacity)
    g = np.random.default_rng(seed + 2).standard_normal(n)
    expected = two_loop(g, s_hist[-capacity:], y_hist[-capacity:])
    np.testing.assert_allclose(compact_product(history, g), expected, rtol=1e-10, atol=1e-12)
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
    np.testing.assert_allclose(
        compact_product(history, y_hat[-1]), s_hist[-1], rtol=1e-9, atol=1e-11
    )
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
