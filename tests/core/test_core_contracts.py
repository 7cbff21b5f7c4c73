"""Contracts of mlbfgs/core that the property tests do not pin down (found by mutation
testing, docs/testing.md): exact error messages, edge cases of the primitives, the
counters in ``stats()``, and arrays that stay on a non-default device."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import array_api_strict as xps
import numpy as np
import pytest

import mlbfgs
from mlbfgs.core import (
    MLBFGSConfig,
    balanced_partition,
    curvature_ratio,
    damp,
    two_loop,
)
from mlbfgs.core.partition import validate_partition

# -- partitions ------------------------------------------------------------------------------


def best_max_load(sizes: tuple[int, ...], parts: int) -> int:
    return min(
        max(sum(sizes[a:b]) for a, b in itertools.pairwise((0, *cuts, len(sizes))))
        for cuts in itertools.combinations(range(1, len(sizes)), parts - 1)
    )


def test_balanced_partition_is_optimal_on_every_small_case() -> None:
    """Exhaustive over sizes from {1, 2, 3, 7} and up to 5 tensors: small sizes make ties
    and off-by-one capacities matter, which large random sizes rarely reach."""
    for count in range(1, 6):
        for sizes in itertools.product((1, 2, 3, 7), repeat=count):
            for parts in range(1, count + 1):
                blocks = balanced_partition(list(sizes), parts)
                assert [i for block in blocks for i in block] == list(range(count))
                assert len(blocks) == parts and all(blocks)
                load = max(sum(sizes[i] for i in block) for block in blocks)
                assert load == best_max_load(sizes, parts), (sizes, parts, blocks)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([[0, 1], [1, 2]], "parameter 1 is in blocks[0] and blocks[1]"),
        ([[0], [2], [1, 2]], "parameter 2 is in blocks[1] and blocks[2]"),
        (["01", [2]], "blocks[0] must be a non-empty list of parameter indices"),
        ([[0, 1], 2], "blocks[1] must be a non-empty list of parameter indices"),
        ([[0, 1], [2, 3]], "blocks[1] holds index 3, outside [0, 3)"),
        ([[0, 1]], "blocks must cover every parameter; missing indices [2]"),
    ],
)
def test_validate_partition_messages(blocks: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        validate_partition(blocks, 3)


# -- configuration ---------------------------------------------------------------------------

RULES = {
    "hessian_momentum": ("in [0, 1)", 0.0, 1.0),
    "tau0": ("in (0, 1]", 1.0, 0.0),
    "sigma_low": ("in [0, 1)", 0.0, 1.0),
    "sigma_high": ("> 1", 1.0 + 1e-9, 1.0),
    "momentum": ("in [0, 1)", 0.0, 1.0),
    "weight_decay": ("a finite number >= 0", 0.0, -1e-12),
    "adam_beta2": ("in [0, 1)", 0.0, 1.0),
    "adam_eps": ("> 0", 1e-30, 0.0),
}


@pytest.mark.parametrize("name", list(RULES))
def test_config_accepts_its_boundary_and_names_the_rule(name: str) -> None:
    rule, accepted, rejected = RULES[name]
    assert getattr(MLBFGSConfig(**{name: accepted}), name) == accepted
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'{name} must be {rule}, got {rejected!r}')}$"
    ):
        MLBFGSConfig(**{name: rejected})


# -- primitives ------------------------------------------------------------------------------


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


# -- counters and state ----------------------------------------------------------------------


def quadratic_run(steps: int, poison: tuple[int, ...] = (), **config: Any) -> mlbfgs.MLBFGS:
    params = [np.array([1.0, -0.5, 2.0])]
    opt = mlbfgs.MLBFGS(params, lr=0.1, update_every=2, **config)
    for t in range(1, steps + 1):
        g = np.array([1.0, 2.0, 3.0]) * params[0]
        if t in poison:
            g[1] = np.nan
        opt.step([g])
    return opt


def test_skipped_steps_are_counted_each_time() -> None:
    assert quadratic_run(9, poison=(3, 6, 7)).stats()[0]["skipped_steps"] == 3


def test_undamped_pairs_report_tau_one_and_momentum_zero_keeps_no_buffer() -> None:
    opt = quadratic_run(9, damping=False, momentum=0.0)
    stats = opt.stats()[0]
    assert stats["pairs_pushed"] == 3 and stats["tau"] == 1.0
    assert "block0.momentum_buffer" not in opt.state_dict()
    assert "block0.momentum_buffer" in quadratic_run(9).state_dict()


def test_rejected_pairs_report_their_mu_and_tau() -> None:
    # s = 0: mu and tau are both undefined.
    params = [np.array([1.0, -2.0])]
    opt = mlbfgs.MLBFGS(params, update_every=2, hessian_momentum=0.0, momentum=0.0)
    for g in ([0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]):
        opt.step([np.array(g)])
    stats = opt.stats()[0]
    assert stats["pairs_rejected"] == 1 and math.isnan(stats["mu"]) and math.isnan(stats["tau"])
    # Undamped negative curvature: rejected, mu reported, tau 1 (no damping applied).
    params = [np.array([1.0, 1.0])]
    flip = mlbfgs.MLBFGS(params, lr=0.1, update_every=1, damping=False, hessian_momentum=0.0)
    flip.step([np.array([1.0, 1.0])])
    flip.step([np.array([3.0, 3.0])])  # s = (-0.1, -0.1), y = (2, 2): mu = -20
    stats = flip.stats()[0]
    assert (stats["pairs_pushed"], stats["pairs_rejected"]) == (0, 1)
    assert stats["mu"] == pytest.approx(-20.0, rel=1e-12) and stats["tau"] == 1.0


# -- a non-default device --------------------------------------------------------------------


def test_everything_stays_on_the_parameters_device() -> None:
    """array_api_strict refuses to mix devices, so every array the core allocates (history,
    Gram matrices, slot indices of the compact form) must be on the parameters' device."""
    other = xps.Device("device1")
    rng = np.random.default_rng(4)
    start = [rng.standard_normal(5), rng.standard_normal((2, 3))]
    scales = [np.linspace(1.0, 3.0, 5), np.linspace(0.5, 2.0, 6).reshape(2, 3)]
    results = []
    for where in (None, other):
        params = [xps.asarray(p, device=where) for p in start]
        h = [xps.asarray(c, device=where) for c in scales]
        opt = mlbfgs.MLBFGS(params, lr=0.1, update_every=2, history_size=2, blocks=2)
        for _ in range(12):
            opt.step([c * p for c, p in zip(h, params, strict=True)])
        assert all(s["pairs_pushed"] == 5 for s in opt.stats())
        state = opt.state_dict()
        arrays = [v for v in state.values() if hasattr(v, "device")]
        assert arrays and all(v.device == (where or xps.Device("CPU_DEVICE")) for v in arrays)
        assert all(p.device == (where or xps.Device("CPU_DEVICE")) for p in params)
        for block in opt._blocks.values():
            chronological = block.history.chronological(xps)
            assert all(a.device == (where or xps.Device("CPU_DEVICE")) for a in chronological)
        results.append([np.asarray(p.to_device(xps.Device("CPU_DEVICE"))) for p in params])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5, 1.0, 2.0])
def test_weight_decay_is_added_for_every_value(weight_decay: float) -> None:
    """The first step is SGD on g + wd theta, whatever wd is (1.0 included)."""
    params = [np.array([1.0, -2.0, 4.0])]
    opt = mlbfgs.MLBFGS(params, lr=0.25, momentum=0.0, weight_decay=weight_decay)
    opt.step([np.array([1.0, 1.0, 1.0])])
    expected = np.array([1.0, -2.0, 4.0]) - 0.25 * (1.0 + weight_decay * np.array([1.0, -2.0, 4.0]))
    np.testing.assert_array_equal(params[0], expected)


def test_step_control_options_are_checked_by_name() -> None:
    params = [np.ones(3)]
    for kwargs, match in [
        (
            {"step_norm": "length"},
            r"step_norm must be one of \('none', 'gradient', 'trust', 'unit'\), got 'length'",
        ),
        ({"pair_momentum": 1.0}, r"pair_momentum must be in \[0, 1\), got 1.0"),
        ({"pair_momentum": -0.1}, r"pair_momentum must be in \[0, 1\)"),
        ({"averaging": "median"}, r"averaging must be one of \('mean', 'sum'\), got 'median'"),
        ({"pair_timing": "later"}, r"pair_timing must be one of"),
        ({"restart_grad_average": 1}, r"restart_grad_average must be a bool, got 1"),
        ({"preset": "fast"}, r"preset must be None, 'paper' or 'released', got 'fast'"),
    ]:
        with pytest.raises(ValueError, match=match):
            mlbfgs.MLBFGS(params, **kwargs)
    with pytest.raises(TypeError, match=r"unknown hyperparameters \['speed'\]"):
        mlbfgs.MLBFGSConfig.from_preset(None, speed=1.0)


@pytest.mark.parametrize("step_norm", ["gradient", "trust", "unit"])
def test_a_zero_gradient_takes_no_step_under_the_step_norms(step_norm: str) -> None:
    """H 0 = 0: a rescaled zero direction stays zero (no 0/0) and the parameters stay."""
    params = [np.array([1.0, -2.0, 0.5])]
    opt = mlbfgs.MLBFGS(
        params, lr=0.1, update_every=1, history_size=2, momentum=0.0, step_norm=step_norm
    )
    for _ in range(4):
        opt.step([params[0] * np.array([1.0, 2.0, 3.0])])
    assert opt.stats()[0]["pairs_stored"] == 2
    before = params[0].copy()
    opt.step([np.zeros(3)])
    np.testing.assert_array_equal(params[0], before)


def test_damped_pair_of_zero_curvature_is_rejected() -> None:
    """With sigma_low = 0 a pair of negative curvature is damped to s^T y_hat = 0
    (tau = 1 / (1 - mu)), which R of the compact form cannot invert: rejected."""
    from array_api_compat import array_namespace

    from mlbfgs.core import Kernels
    from mlbfgs.core.curvature import prepare_pair

    s = np.array([1.0, 0.0, 0.0])
    y = np.array([-0.5, 1.0, 0.0])  # mu = -0.5
    kernels = Kernels(array_namespace(s))
    config = MLBFGSConfig(tau0=0.9, sigma_low=0.0, sigma_high=2.0)
    outcome = prepare_pair(kernels, s, y, config)
    assert not outcome.accepted and outcome.mu == -0.5 and outcome.tau == pytest.approx(1 / 1.5)
    kept = prepare_pair(kernels, s, -y, config)
    assert kept.accepted  # mu = 0.5 > 0: kept


def test_gradient_step_norm_needs_every_preconditioned_blocks_gradient_norm() -> None:
    from array_api_compat import array_namespace

    from mlbfgs.core import Kernels
    from mlbfgs.core.step_norm import direction_scales

    d = np.ones(3)
    kernels = Kernels(array_namespace(d))
    message = "step_norm='gradient' needs g^T g of every preconditioned block"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        direction_scales("gradient", [0, 1], [None, np.float64(4.0)], [d, d], kernels, None)
    scales = direction_scales(
        "gradient", [0, 1], [None, np.float64(12.0)], [None, d], kernels, None
    )
    assert scales[0] is None and float(scales[1]) == pytest.approx(2.0)


def test_trust_only_shortens() -> None:
    """|d| = sqrt(3) against |g| = 3 (longer gradient): kept (factor 1), where grafting
    lengthens it by sqrt(3); against |g| = 1: cut to |g| like grafting (1 / sqrt(3))."""
    from array_api_compat import array_namespace

    from mlbfgs.core import Kernels
    from mlbfgs.core.step_norm import direction_scales

    d = np.ones(3)
    kernels = Kernels(array_namespace(d))
    squares = [np.float64(9.0), np.float64(1.0)]
    trust = direction_scales("trust", [0, 1], squares, [d, d], kernels, None)
    graft = direction_scales("gradient", [0, 1], squares, [d, d], kernels, None)
    assert float(trust[0]) == 1.0 and float(graft[0]) == pytest.approx(3**0.5)
    assert float(trust[1]) == float(graft[1]) == pytest.approx(3**-0.5)
    message = "step_norm='trust' needs g^T g of every preconditioned block"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        direction_scales("trust", [0], [None], [d], kernels, None)
