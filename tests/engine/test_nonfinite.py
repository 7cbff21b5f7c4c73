"""Non-finite gradients never reach the parameters."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic

import mlbfgs


def trained(**kwargs):
    problem = NoisyQuadratic([(4,), (3,), (2,)], seed=11, noise=0.1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=3, blocks=[[0], [1, 2]], **kwargs)
    for t in range(1, 10):  # past warm-up (the probe is the first product with the history);
        # the next step, 10, is not a curvature boundary
        opt.step(problem.gradient(t, params))
    return problem, params, opt


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skip_leaves_the_block_untouched_and_counts(bad) -> None:
    problem, params, opt = trained()
    grads = problem.gradient(10, params)
    grads[1][2] = bad
    block0_before = params[0].copy()
    before = snapshot(params, opt)
    opt.step(grads)
    # Block 1 (params 1 and 2) skipped: parameters and its state are bitwise unchanged.
    np.testing.assert_array_equal(params[1], before[0][1])
    np.testing.assert_array_equal(params[2], before[0][2])
    state = opt.state_dict()
    for key, value in before[1].items():
        if key.startswith("block1.") and key != "block1.stats.skipped_steps":
            np.testing.assert_array_equal(np.asarray(state[key]), np.asarray(value), err_msg=key)
    # Block 0 stepped normally.
    assert not np.array_equal(params[0], block0_before)
    assert [s["skipped_steps"] for s in opt.stats()] == [0, 1]
    assert all(np.isfinite(p).all() for p in params)


def test_skip_at_a_boundary_drops_the_snapshot() -> None:
    """No pair may span more than T steps: after a skipped boundary the next one only
    takes a snapshot, and pairs resume one boundary later."""
    problem = NoisyQuadratic([(4,)], seed=12, noise=0.1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=2)
    for t in range(1, 9):
        grads = problem.gradient(t, params)
        if t == 4:
            grads[0][0] = np.nan
        opt.step(grads)
        pushed = opt.stats()[0]["pairs_pushed"]
        # Snapshots at 2, (4 skipped: dropped), 6; pairs at 8 only (none at 6).
        assert pushed == (1 if t >= 8 else 0), (t, pushed)
        averages = opt._blocks[0].averages
        assert (averages.snapshot_theta is None) == (t in (1, 4, 5)), t


def test_skip_during_warmup() -> None:
    params = [np.ones(3)]
    opt = mlbfgs.MLBFGS(params, lr=0.1)
    before = snapshot(params, opt)
    opt.step([np.array([1.0, np.nan, 0.0])])
    # The step counter (which drives lr schedules) advances; nothing else changes.
    assert_unchanged(before, params, opt, ignore=("step", "skipped_steps"))
    assert opt.stats()[0]["skipped_steps"] == 1
    opt.step([np.ones(3)])  # the first finite step starts the averages
    assert opt._blocks[0].averages is not None
    np.testing.assert_allclose(params[0], 0.9)


def test_raise_changes_nothing() -> None:
    problem, params, opt = trained(on_nonfinite="raise")
    grads = problem.gradient(10, params)
    grads[0][0] = np.nan
    before = snapshot(params, opt)
    with pytest.raises(mlbfgs.NonFiniteGradientError, match=r"block\(s\) \[0\]"):
        opt.step(grads)
    assert_unchanged(before, params, opt)
    assert opt.step_count == 9


def test_overflowing_gradient_is_skipped_in_warmup() -> None:
    """A gradient whose squared norm overflows cannot be a useful SGD direction either."""
    params = [np.ones(2, dtype=np.float32)]
    opt = mlbfgs.MLBFGS(params)
    opt.step([np.array([1e30, 0.0], dtype=np.float32)])
    assert opt.stats()[0]["skipped_steps"] == 1
    np.testing.assert_array_equal(params[0], 1.0)


def test_weight_decay_does_not_hide_nan() -> None:
    params = [np.ones(2)]
    opt = mlbfgs.MLBFGS(params, weight_decay=0.1, on_nonfinite="raise")
    with pytest.raises(mlbfgs.NonFiniteGradientError):
        opt.step([np.array([np.inf, 0.0])])
