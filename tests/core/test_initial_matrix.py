"""``h0="adam"`` without pairs is Adam, step for step (a plain NumPy loop of Kingma & Ba's
Algorithm 1 is the reference), and a skipped step leaves its bias correction alone.
With pairs, ``tests/engine/test_semantics.py`` follows the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core import MLBFGSConfig
from mlbfgs.core.algorithm import BlockState, adam_input
from mlbfgs.core.history import CurvatureHistory
from mlbfgs.core.initial_matrix import bias_correction

SHAPES = [(4, 3), (5,)]


def gradients(t: int, params: list[np.ndarray]) -> list[np.ndarray]:
    """A noisy, badly scaled quadratic: coordinates whose gradients differ by 1e4."""
    rng = np.random.default_rng(t)
    scale = [np.logspace(-2, 2, p.size).reshape(p.shape) for p in params]
    return [s * p + 0.1 * rng.standard_normal(p.shape) for s, p in zip(scale, params, strict=True)]


def adam(
    params: list[np.ndarray], steps: list[int], lr: float, beta1: float, beta2: float, eps: float
) -> list[np.ndarray]:
    """Plain Adam over the given steps (gradients drawn at those step numbers)."""
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for k, t in enumerate(steps, start=1):
        for i, g in enumerate(gradients(t, params)):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**k), v[i] / (1 - beta2**k)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def initial() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape) for shape in SHAPES]


@pytest.mark.parametrize("blocks", [None, 2])
@pytest.mark.parametrize(("beta1", "beta2", "eps"), [(0.9, 0.999, 1e-8), (0.0, 0.9, 1e-3)])
def test_without_pairs_the_step_is_adams(blocks, beta1, beta2, eps) -> None:
    """40 steps at lr 0.01. ``D^{1/2} (D^{1/2} m^)`` rounds differently from ``m^ / (sqrt(v^)
    + eps)``: a few ulps per step, which 40 steps of a contracting iteration keep near
    40 * 8 ulps of the parameters; 1e-12 relative leaves room for that and for nothing
    else (a wrong bias correction moves the first steps by a factor of ~3)."""
    params = initial()
    opt = mlbfgs.MLBFGS(
        params, lr=0.01, blocks=blocks, h0="adam", warmup=10**9,
        momentum=beta1, adam_beta2=beta2, adam_eps=eps,
    )  # fmt: skip
    for t in range(1, 41):
        opt.step(gradients(t, params))
    want = adam(initial(), list(range(1, 41)), 0.01, beta1, beta2, eps)
    for got, expected in zip(params, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_a_skipped_step_does_not_count_in_the_bias_correction() -> None:
    """A non-finite gradient at step 3 is skipped: the run is Adam over steps 1, 2, 4, ...,
    whose 3rd update has k = 3 (not t = 4)."""
    params = initial()
    opt = mlbfgs.MLBFGS(params, lr=0.01, h0="adam", warmup=10**9)
    for t in range(1, 11):
        g = gradients(t, params)
        if t == 3:
            g[0][0, 0] = np.nan
        opt.step(g)
    want = adam(initial(), [1, 2, 4, 5, 6, 7, 8, 9, 10], 0.01, 0.9, 0.999, 1e-8)
    for got, expected in zip(params, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_bias_correction() -> None:
    assert bias_correction(0.9, 1) == pytest.approx(0.1)
    assert bias_correction(0.0, 1) == 1.0
    assert bias_correction(0.999, 2) == pytest.approx(1 - 0.999**2)


def test_the_engine_updates_adams_moments_in_place() -> None:
    """The engine's ``adam_input`` writes m and v into the block's own arrays, as it does
    the heavy-ball buffer: no new array per step (views handed out, such as the torch
    adapter's ``optimizer.state``, stay live), and on CuPy the fused in-place kernel."""
    kernels = kernels_for(np)
    config = MLBFGSConfig(h0="adam", momentum=0.5, adam_beta2=0.75)
    block = BlockState(history=CurvatureHistory.empty(np, 2, 3, np.float64, None))
    block.momentum_buffer, block.second_moment = np.full(3, 2.0), np.full(3, 4.0)
    first, second = block.momentum_buffer, block.second_moment
    adam_input(block, np.asarray([1.0, -2.0, 0.0]), 2, config, kernels)
    assert block.momentum_buffer is first and block.second_moment is second
    np.testing.assert_array_equal(first, [1.5, 0.0, 1.0])  # exact in binary
    np.testing.assert_array_equal(second, [3.25, 4.0, 3.0])
