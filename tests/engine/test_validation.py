"""Bad input raises a clear error naming the argument and changes nothing."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic

import mlbfgs


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"history_size": 0}, "history_size"),
        ({"history_size": 2.5}, "history_size"),
        ({"update_every": 0}, "update_every"),
        ({"hessian_momentum": 1.0}, "hessian_momentum"),
        ({"hessian_momentum": -0.1}, "hessian_momentum"),
        ({"tau0": 0.0}, "tau0"),
        ({"tau0": 1.5}, "tau0"),
        ({"sigma_low": 1.0}, "sigma_low"),
        ({"sigma_low": -0.01}, "sigma_low"),
        ({"sigma_high": 1.0}, "sigma_high"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": -0.5}, "momentum"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"warmup": -1}, "warmup"),
        ({"damping": "yes"}, "damping"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite"),
        ({"blocks": 0}, "blocks"),
        ({"blocks": 5}, "blocks"),
        ({"blocks": [[0, 1]]}, "blocks"),  # index 2 missing
        ({"blocks": [[0, 1], [1, 2]]}, "blocks"),  # index 1 twice
        ({"blocks": [[0, 1, 2, 3]]}, "blocks"),  # index out of range
        ({"blocks": [[0], [], [1, 2]]}, "blocks"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs, name) -> None:
    params = [np.ones(3), np.ones(2), np.ones((2, 2))]
    before = [p.copy() for p in params]
    with pytest.raises((ValueError, TypeError), match=name):
        mlbfgs.MLBFGS(params, **kwargs)
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p, b)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (np.ones(3), "params"),  # a single array, not a list
        ([], "params"),
        ([np.ones(3), [1.0, 2.0]], r"params\[1\]"),
        ([np.ones(3, dtype=np.int64)], r"params\[0\]"),
        ([np.ones(3), array_api_strict.ones(3)], "params"),
    ],
)
def test_invalid_params(params, match) -> None:
    with pytest.raises(TypeError, match=match):
        mlbfgs.MLBFGS(params)


def test_block_with_mixed_dtypes_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"blocks\[0\] mixes dtypes"):
        mlbfgs.MLBFGS([np.ones(3), np.ones(2, dtype=np.float32)])
    params = [np.ones(3), np.ones(2, dtype=np.float32)]
    opt = mlbfgs.MLBFGS(params, blocks=[[0], [1]], lr=0.5, momentum=0.0)
    opt.step([np.ones(3), np.ones(2, dtype=np.float32)])  # one SGD step per block, own dtype
    assert [p.dtype for p in params] == [np.float64, np.float32]
    assert params[0].tolist() == [0.5] * 3 and params[1].tolist() == [0.5] * 2


def trained():
    problem = NoisyQuadratic([(3, 2), (4,)], seed=7, noise=0.1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=2, history_size=3)
    for t in range(1, 9):
        opt.step(problem.gradient(t, params))
    return problem, params, opt


@pytest.mark.parametrize(
    ("make_grads", "error", "match"),
    [
        (lambda g: g[:1], ValueError, "grads has 1 arrays"),
        (lambda g: [*g, g[0]], ValueError, "grads has 3 arrays"),
        (lambda g: np.concatenate([x.ravel() for x in g]), TypeError, "list of arrays"),
        (lambda g: [g[0], g[1].tolist()], TypeError, r"grads\[1\] is a list"),
        (lambda g: [g[0], g[1].reshape(2, 2)], ValueError, r"grads\[1\] has shape"),
        (lambda g: [g[0].astype(np.float32), g[1]], TypeError, r"grads\[0\] has dtype"),
        (lambda g: [g[0], array_api_strict.asarray(g[1])], TypeError, r"grads\[1\]"),
        (lambda g: None, TypeError, "grads"),
    ],
)
def test_invalid_grads_change_nothing(make_grads, error, match) -> None:
    problem, params, opt = trained()
    before = snapshot(params, opt)
    with pytest.raises(error, match=match):
        opt.step(make_grads(problem.gradient(9, params)))
    assert_unchanged(before, params, opt)
    assert opt.step_count == 8


def test_grads_on_another_device_change_nothing() -> None:
    xp = array_api_strict
    params = [xp.ones(3), xp.ones(2)]
    opt = mlbfgs.MLBFGS(params, update_every=1)
    opt.step([xp.ones(3), xp.ones(2)])
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=r"grads\[1\] is on"):
        opt.step([xp.ones(3), xp.ones(2, device=xp.Device("device1"))])
    assert_unchanged(before, params, opt)


@pytest.mark.parametrize("bad", [lambda t: -1.0, lambda t: float("inf"), lambda t: "fast"])
def test_bad_learning_rate_schedule_changes_nothing(bad) -> None:
    problem, params, opt = trained()
    opt.lr = bad
    before = snapshot(params, opt)
    with pytest.raises((ValueError, TypeError), match=r"lr\(9\)"):
        opt.step(problem.gradient(9, params))
    assert_unchanged(before, params, opt)


def test_learning_rate_schedule_gets_the_step_number() -> None:
    seen = []
    params = [np.ones(2)]
    opt = mlbfgs.MLBFGS(params, lr=lambda t: seen.append(t) or 0.1)
    for _ in range(3):
        opt.step([np.ones(2)])
    assert seen == [1, 2, 3]


def test_numpy_scalars_are_accepted_as_hyperparameters() -> None:
    params = [np.ones(3)]
    opt = mlbfgs.MLBFGS(
        params,
        lr=np.float32(0.1),
        history_size=np.int64(4),
        update_every=np.int32(2),
        momentum=np.float64(0.5),
    )
    assert opt.config.history_size == 4 and type(opt.config.history_size) is int
    assert opt.config.warmup_steps == 4
    assert type(opt.config.momentum) is float
    opt.step([np.ones(3)])  # the first step is SGD: theta - lr g, lr the float32's value
    np.testing.assert_array_equal(params[0], np.full(3, 1.0 - float(np.float32(0.1))))


def test_the_same_array_twice_is_rejected() -> None:
    a = np.ones(3)
    with pytest.raises(ValueError, match=r"params\[1\] is the same array as params\[0\]"):
        mlbfgs.MLBFGS([a, a])


def test_sigma_low_zero_rejects_flat_pairs_instead_of_failing() -> None:
    """With sigma_low = 0, damping drives s^T y_hat of a negative-curvature pair to 0
    (Eq (7) with mu = -1 gives tau = 1/2); such a pair is rejected, not pushed."""
    hessian = np.diag([-1.0, 1.0])  # moving along the first axis: curvature -1
    params = [np.array([1.0, 0.0])]
    opt = mlbfgs.MLBFGS(params, lr=0.01, update_every=2, sigma_low=0.0)
    for _ in range(20):
        opt.step([hessian @ params[0]])
    stats = opt.stats()[0]
    assert stats["mu"] == pytest.approx(-1.0) and stats["tau"] == pytest.approx(0.5)
    assert stats["pairs_pushed"] == 0 and stats["pairs_rejected"] == 9
    assert np.isfinite(params[0]).all()
