"""Contracts of ``MLBFGS`` and its checkpoints found missing by mutation testing
(docs/testing.md): defaults, snapshots that do not alias the optimizer, refused states,
``apply`` only taking this optimizer's latest ``prepare``, and weight decay on the first
step."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic

import mlbfgs
from mlbfgs.core import MLBFGSConfig


def trained(steps: int = 9) -> tuple[NoisyQuadratic, list[np.ndarray], mlbfgs.MLBFGS]:
    problem = NoisyQuadratic([(3, 2), (4,)], seed=17, noise=0.1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=2, history_size=2, blocks=2)
    for t in range(1, steps + 1):
        opt.step(problem.gradient(t, params))
    return problem, params, opt


def test_defaults_are_the_papers_and_agree_with_the_config() -> None:
    """Table 5 of the paper, and the same defaults in MLBFGSConfig and both front ends."""
    table5 = {
        "history_size": 10,
        "update_every": 50,
        "hessian_momentum": 0.999,
        "tau0": 0.99,
        "sigma_low": 0.01,
        "sigma_high": 1.5,
        "damping": True,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup": None,
    }
    assert {k: getattr(MLBFGSConfig(), k) for k in table5} == table5
    # Both front ends take the hyperparameters from MLBFGSConfig's one definition.
    engine = inspect.signature(mlbfgs.MLBFGS).parameters
    assert engine["hyperparameters"].kind is inspect.Parameter.VAR_KEYWORD
    assert mlbfgs.MLBFGS([np.zeros(3)]).config == MLBFGSConfig()
    others = {"lr": 0.1, "blocks": None, "comm": None, "average_grads": True}
    others["on_nonfinite"] = "skip"
    assert {k: engine[k].default for k in others} == others
    torch_mod = pytest.importorskip("mlbfgs.torch")
    adapter = inspect.signature(torch_mod.MLBFGS).parameters
    assert adapter["hyperparameters"].kind is inspect.Parameter.VAR_KEYWORD
    defaults = torch_mod.MLBFGS([pytest.importorskip("torch").zeros(3)]).defaults
    assert {k: defaults[k] for k in table5} == table5
    assert {k: adapter[k].default for k in others} == others


def test_state_dict_shares_no_memory_with_the_optimizer() -> None:
    problem, params, opt = trained()
    state = opt.state_dict()
    saved = {k: np.array(v, copy=True) for k, v in state.items() if isinstance(v, np.ndarray)}
    for t in range(10, 16):  # more pairs pushed, Gram matrices updated
        opt.step(problem.gradient(t, params))
    for key, value in saved.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_loaded_state_shares_no_memory_with_the_dict() -> None:
    problem, params, opt = trained()
    state = opt.state_dict()
    kept = {k: np.array(v, copy=True) for k, v in state.items() if isinstance(v, np.ndarray)}
    resumed_params = [p.copy() for p in params]
    resumed = mlbfgs.MLBFGS(resumed_params, lr=0.05, update_every=2, history_size=2, blocks=2)
    resumed.load_state_dict(state)
    for t in range(10, 16):
        resumed.step(problem.gradient(t, resumed_params))
    for key, value in kept.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"block0.history.order": [0, 2]}, "not a valid slot order"),  # slot == capacity
        ({"block0.history.order": [-1]}, "not a valid slot order"),
        ({"format_version": 2}, r"format_version'\] is 2"),
        ({"step": -1}, r"step'\] must be >= 0, got -1"),
    ],
)
def test_states_out_of_range_are_refused(edit: dict[str, Any], match: str) -> None:
    _, params, opt = trained()
    state = {**opt.state_dict(), **edit}
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state)
    assert_unchanged(before, params, opt)


def test_apply_takes_only_this_optimizers_latest_prepare() -> None:
    problem, params, opt = trained()
    _, other_params, other = trained()
    grads = problem.gradient(10, params)
    mine, theirs = opt.prepare(grads), other.prepare(grads)
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match="latest prepare"):
        opt.apply(theirs)  # same step number, another optimizer
    assert_unchanged(before, params, opt)
    opt.apply(mine)
    with pytest.raises(ValueError, match="latest prepare"):
        opt.apply(mine)  # this optimizer's, but no longer the latest
    assert opt.step_count == 10


@pytest.mark.parametrize("weight_decay", [0.0, 0.5, 1.0, 2.0])
def test_weight_decay_is_added_for_every_value(weight_decay: float) -> None:
    """The first step is SGD on g + wd theta, whatever wd is (1.0 included)."""
    params = [np.array([1.0, -2.0, 4.0])]
    opt = mlbfgs.MLBFGS(params, lr=0.25, momentum=0.0, weight_decay=weight_decay)
    opt.step([np.array([1.0, 1.0, 1.0])])
    expected = np.array([1.0, -2.0, 4.0]) - 0.25 * (1.0 + weight_decay * np.array([1.0, -2.0, 4.0]))
    np.testing.assert_array_equal(params[0], expected)
