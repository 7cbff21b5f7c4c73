"""Eq (5) (and the released sums) against its formula, in place (the engine) and as new
arrays (the pure step), and the stalled share, whose fixed point differs between the two
(theta for the mean, theta / (1 - beta) for the sums)."""

from __future__ import annotations

import numpy as np
import pytest

from mlbfgs.backends import kernels_for
from mlbfgs.core import MomentumAverages
from mlbfgs.core.averages import stalled_share, update_averages


def averages(theta: list[float], grad: list[float]) -> MomentumAverages:
    return MomentumAverages(theta=np.asarray(theta), grad=np.asarray(grad))


@pytest.mark.parametrize("averaging", ["mean", "sum"])
def test_update_is_eq_5_or_the_released_sums(averaging: str) -> None:
    """Values exact in binary, so the formula holds to the last bit."""
    state = averages([2.0, 4.0], [1.0, -1.0])
    state.update(np.asarray([4.0, 0.0]), np.asarray([3.0, 1.0]), 0.5, kernels_for(np), averaging)
    if averaging == "mean":  # beta M + (1 - beta) x
        want_theta, want_grad = [3.0, 2.0], [2.0, 0.0]
    else:  # beta M + x
        want_theta, want_grad = [5.0, 2.0], [3.5, 0.5]
    np.testing.assert_array_equal(state.theta, want_theta)
    np.testing.assert_array_equal(state.grad, want_grad)


@pytest.mark.parametrize("averaging", ["mean", "sum"])
def test_both_shapes_of_eq_5_round_alike(averaging: str) -> None:
    """The pure step's new arrays are the engine's in-place update to the last bit (random
    values, beta = 0.9, whose ``1 - beta`` is inexact)."""
    rng = np.random.default_rng(5)
    old = (rng.standard_normal(50), rng.standard_normal(50))
    values = (rng.standard_normal(50), rng.standard_normal(50))
    kernels = kernels_for(np)
    pure = update_averages(kernels, old, values, 0.9, averaging, in_place=False)
    buffers = (old[0].copy(), old[1].copy())
    returned = update_averages(kernels, buffers, values, 0.9, averaging, in_place=True)
    assert returned[0] is buffers[0] and returned[1] is buffers[1]
    for a, b in zip(pure, buffers, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(pure[0], old[0])  # the pure shape left its input alone


def stalled(
    state: MomentumAverages, s: np.ndarray, theta: np.ndarray, beta: float, how: str
) -> float:
    return float(stalled_share(np, s, state.theta, theta, beta, how, np.float64))


def test_stalled_share_of_the_mean_counts_entries_away_from_theta() -> None:
    """Entry 0 did not move and theta equals M (at the fixed point: not stalled); entries
    1, 4 and 5 did not move although theta differs (stalled); entries 2 and 3 moved (s of
    0.5 and 2). Three of six, a share no miscounting of these cases gives (one, two, four
    or six of six)."""
    state = averages([2.0, 4.0, 1.0, 5.0, 3.0, 7.0], [0.0] * 6)
    s = np.asarray([0.0, 0.0, 0.5, 2.0, 0.0, 0.0])
    theta = np.asarray([2.0, 3.0, 7.0, 6.0, 1.0, 8.0])
    assert stalled(state, s, theta, 0.5, "mean") == 0.5


def test_stalled_share_of_the_sums_uses_their_fixed_point() -> None:
    """The sums' fixed point is theta / (1 - beta): with beta = 0.5, M = [2, 4] rests at
    theta = [1, 2]. Entry 0 is there (not stalled), entry 1 is not (stalled); a test of
    the mean's fixed point (theta == M) would call both stalled."""
    state = averages([2.0, 4.0], [0.0, 0.0])
    s = np.zeros(2)
    theta = np.asarray([1.0, 3.0])
    assert stalled(state, s, theta, 0.5, "sum") == 0.5
    assert stalled(state, s, theta, 0.5, "mean") == 1.0


def test_stalled_share_of_an_empty_block_is_zero() -> None:
    state = averages([], [])
    assert stalled(state, np.zeros(0), np.zeros(0), 0.9, "mean") == 0.0
