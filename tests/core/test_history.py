"""The storage of a half-precision curvature history (``history_dtype``), below the
optimizer: scaled rows, the Gram matrices and H g against float64 and the two-loop
recursion, the kernels' wide path, and rows at the edges of the dtypes' ranges."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as xp
import numpy as np
import pytest
from problems import NoisyQuadratic

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core import CurvatureHistory, Kernels, compact_form, precondition, two_loop
from mlbfgs.core.history import ROW_PEAK_EXPONENT


def tiny_pairs(n: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs whose entries (1e-9 .. 1e-6) are subnormal or zero in unscaled float16."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        s = rng.standard_normal(n) * 1e-6 * rng.uniform(1e-3, 1.0, n)
        pairs.append((s, s * rng.uniform(0.5, 2.0, n)))
    return pairs


def history_of(pairs: list[tuple[np.ndarray, np.ndarray]], dtype: Any) -> CurvatureHistory:
    history = CurvatureHistory.empty(xp, 3, pairs[0][0].shape[0], dtype, "cpu")
    for s, y in pairs:
        history.push(s.astype(np.float32), y.astype(np.float32), Kernels(xp))
    return history


def test_half_rows_are_scaled_by_powers_of_two_and_keep_tiny_entries() -> None:
    pairs = tiny_pairs(200, 4)
    history = history_of(pairs, np.float16)
    assert history.scales is not None
    for row in range(6):
        scale = float(history.scales[row])
        assert math.frexp(scale)[0] == 0.5  # a power of two
        peak = float(np.abs(history.pairs[row].astype(np.float64)).max())
        assert 2.0 ** (ROW_PEAK_EXPONENT - 1) <= peak < 2.0**ROW_PEAK_EXPONENT
    s_hist, _ = history.chronological(xp)
    newest_s = pairs[-1][0]
    # float16's 11 bits, entry by entry, where unscaled storage would flush most to zero
    np.testing.assert_allclose(s_hist[-1], newest_s, rtol=2.0**-11, atol=0)
    assert np.count_nonzero(newest_s.astype(np.float16)) < newest_s.size


def test_gram_matrices_are_the_products_of_the_stored_rows() -> None:
    history = history_of(tiny_pairs(300, 5, seed=1), np.float16)
    s_hist, y_hist = (rows.astype(np.float64) for rows in history.chronological(xp))
    slots = history.order
    for gram, exact in ((history.s_dot_y, s_hist @ y_hist.T), (history.y_dot_y, y_hist @ y_hist.T)):
        # float32 accumulation: to 1e-6 of the largest (diagonal) entry
        np.testing.assert_allclose(
            gram[np.ix_(slots, slots)], exact, rtol=0, atol=1e-6 * np.abs(exact).max()
        )


@pytest.mark.parametrize("g_dtype", [np.float32, np.float64])
def test_half_history_gives_the_two_loop_of_its_pairs_and_nearly_the_float64_one(g_dtype) -> None:
    pairs = tiny_pairs(400, 5, seed=2)
    g = np.random.default_rng(3).standard_normal(400).astype(g_dtype)
    kernels = Kernels(xp)
    half, full = history_of(pairs, np.float16), history_of(pairs, np.float64)
    got = precondition(half, compact_form(xp, half), g, kernels.project(half.pairs, g), kernels)
    assert got.dtype == g_dtype
    s_hist, y_hist = (rows.astype(np.float64) for rows in half.chronological(xp))
    own = two_loop(g.astype(np.float64), s_hist, y_hist)
    np.testing.assert_allclose(got, own, rtol=0, atol=1e-5 * np.abs(own).max())
    g64 = g.astype(np.float64)
    reference = precondition(full, compact_form(xp, full), g64, full.pairs @ g64, kernels)
    assert np.linalg.norm(got - reference) < 1e-2 * np.linalg.norm(reference)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_newest_pair_comes_back_in_the_vectors_dtype(dtype: Any) -> None:
    """Pair momentum mixes it into the next pair: a half-precision scale of 2^-34 would
    be zero in float16, so decoding goes through float32."""
    history = history_of(tiny_pairs(50, 2, seed=4), np.float16)
    newest = history.newest(dtype)
    assert newest is not None
    s_hist, y_hist = history.chronological(xp)
    for got, want in zip(newest, (s_hist[-1], y_hist[-1]), strict=True):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want.astype(dtype))


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_half_history_matches_numpy_float64_closely(dtype_name: str) -> None:
    torch = pytest.importorskip("torch")
    torch_xp = pytest.importorskip("array_api_compat.torch")
    pairs = tiny_pairs(500, 4, seed=7)
    kernels = kernels_for(torch_xp)
    history = CurvatureHistory.empty(torch_xp, 3, 500, getattr(torch, dtype_name), "cpu")
    for s, y in pairs:
        history.push(torch.from_numpy(s).float(), torch.from_numpy(y).float(), kernels)
    g = torch.from_numpy(np.random.default_rng(8).standard_normal(500)).float()
    form = compact_form(torch_xp, history)
    got = precondition(history, form, g, kernels.project(history.pairs, g), kernels)
    full = history_of(pairs, np.float64)
    g64 = g.double().numpy()
    reference = precondition(full, compact_form(xp, full), g64, full.pairs @ g64, Kernels(xp))
    tolerance = 5e-2 if dtype_name == "bfloat16" else 1e-2
    assert np.linalg.norm(got.double().numpy() - reference) < tolerance * np.linalg.norm(reference)


# -- the storage's edges: ranges, dtypes, and what a state may hold ------------------------


@pytest.mark.parametrize(("dtype", "magnitude"), [(np.float64, 1e-50), (np.float16, 1e-6)])
def test_rows_far_outside_float32_or_inside_float16_subnormals_are_stored_exactly_scaled(
    dtype: Any, magnitude: float
) -> None:
    """Scaling happens in float32 or wider and in two exact halves: float64 differences of
    1e-50 (below float32's range) and float16 subnormals both keep their leading bits."""
    rng = np.random.default_rng(5)
    s = (magnitude * rng.uniform(0.5, 1.0, 40)).astype(dtype)
    history = CurvatureHistory.empty(xp, 2, 40, np.float16, "cpu")
    history.push(s, 2 * s, Kernels(xp))
    s_hist, y_hist = history.chronological(xp)
    assert s_hist.dtype == y_hist.dtype == np.float32
    expected = s.astype(np.float64)
    newest = history.newest(dtype)
    assert newest is not None and newest[0].dtype == dtype
    np.testing.assert_allclose(newest[0].astype(np.float64), expected, rtol=2.0**-11, atol=0)
    np.testing.assert_allclose(newest[1].astype(np.float64), 2 * expected, rtol=2.0**-11, atol=0)
    if dtype == np.float16:  # float16 input: every bit survives the exact scaling
        np.testing.assert_array_equal(s_hist[0], s.astype(np.float32))


def test_half_gradients_of_small_norm_keep_float32_coefficients() -> None:
    """Scaled rows peak near 2^15, so the coefficients that multiply them are 2^-15 of
    H g's entries: for H g of 1e-3 they are float16 subnormals, kept float32."""
    pairs = tiny_pairs(200, 3, seed=9)
    half = history_of(pairs, np.float16)
    g = (1e-3 * np.random.default_rng(10).standard_normal(200)).astype(np.float16)
    kernels = Kernels(xp)
    got = precondition(half, compact_form(xp, half), g, kernels.project(half.pairs, g), kernels)
    s_hist, y_hist = (rows.astype(np.float64) for rows in half.chronological(xp))
    own = two_loop(g.astype(np.float64), s_hist, y_hist)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, own, rtol=0, atol=2e-3 * np.abs(own).max())


def test_chronological_rows_of_a_half_history_are_float32() -> None:
    history = history_of(tiny_pairs(30, 2), np.float16)
    s_hist, y_hist = history.chronological(xp)
    assert s_hist.dtype == y_hist.dtype == np.float32


def test_a_float32_history_for_float64_parameters() -> None:
    """Not half precision (no scales): the products accumulate in float64, and the newest
    pair comes back as float64 for pair momentum."""
    rng = np.random.default_rng(6)
    kernels = Kernels(xp)
    pairs = rng.standard_normal((4, 50)).astype(np.float32)
    g = rng.standard_normal(50)
    projected = kernels.project(pairs, g)
    assert projected.dtype == np.float64
    np.testing.assert_allclose(projected, pairs.astype(np.float64) @ g, rtol=1e-13)
    coefficients = rng.standard_normal(4)
    combined = kernels.combine(pairs, coefficients, 0.5, g)
    assert combined.dtype == np.float64
    exact = coefficients @ pairs.astype(np.float64) + 0.5 * g
    np.testing.assert_allclose(combined, exact, rtol=0, atol=1e-14 * np.abs(exact).max())
    history = CurvatureHistory.empty(xp, 2, 50, np.float32, "cpu")
    assert history.scales is None
    history.push(g, 2 * g, kernels)
    newest = history.newest(np.float64)
    assert newest is not None and newest[0].dtype == np.float64
    np.testing.assert_array_equal(newest[0], g.astype(np.float32).astype(np.float64))
    params = [np.ones(6), np.ones(3)]
    opt = mlbfgs.MLBFGS(
        params, history_dtype="float32", pair_momentum=0.5, lr=0.05, update_every=2, history_size=3
    )
    problem = NoisyQuadratic([(6,), (3,)], seed=2)
    for t in range(1, 12):
        opt.step(problem.gradient(t, params))
    assert opt.stats()[0]["pairs_pushed"] > 1 and all(np.isfinite(p).all() for p in params)
