"""The step (docs/design.md section 3), step by step, against the plain-loop reference in
reference.py: Algorithm 1 as the paper writes it (``preset="paper"``), and the step-control
options beyond it (section 3.7)."""

from __future__ import annotations

import conditioning
import numpy as np
import pytest
from hypothesis import event, given, target
from hypothesis import strategies as st
from problems import NoisyQuadratic
from reference import ReferenceConfig, reference_run

import mlbfgs
from mlbfgs.core import two_loop

SHAPES = [(3, 4), (5,), (2, 2, 2), ()]


def run_optimizer(problem: NoisyQuadratic, steps: int, blocks, **config):
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, blocks=blocks, **{"preset": "paper", **config})
    for t in range(1, steps + 1):
        opt.step(problem.gradient(t, params))
    return params, opt


@given(
    seed=st.integers(0, 1000),
    update_every=st.integers(1, 6),
    history_size=st.integers(1, 4),
    hessian_momentum=st.sampled_from([0.0, 0.5, 0.9]),
    momentum=st.sampled_from([0.0, 0.5]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    damping=st.booleans(),
    warmup=st.sampled_from([None, 0, 3]),
    tau0=st.sampled_from([0.5, 0.9, 0.99, 1.0]),
    sigma_low=st.sampled_from([0.01, 0.1, 0.5]),
    sigma_high=st.sampled_from([1.1, 1.5, 10.0]),
    blocks=st.sampled_from([2, [[3, 0], [2, 1]], 4, 3, None]),  # None: one block
)
def test_trajectory_matches_reference(seed, blocks, **config) -> None:
    """Step by step, within the spread of eps-perturbed runs of either
    (tests/support/conditioning.py) while the reference stays within GROWTH_BOUND of its
    start; a diverging reference must be matched by a diverging optimizer at the same step."""
    problem = NoisyQuadratic(SHAPES, seed=seed, noise=0.1)
    steps = 40

    def run_mlbfgs(gradient):
        params = problem.initial()
        opt = mlbfgs.MLBFGS(params, blocks=blocks, lr=0.05, preset="paper", **config)
        runs.append(opt)
        for t in range(1, steps + 1):
            opt.step(gradient(t, params))
        return params

    runs: list[mlbfgs.MLBFGS] = []
    got = conditioning.path_of(run_mlbfgs, problem.gradient)
    opt = runs[0]
    partition = [list(layout.indices) for layout in opt.layouts]

    def run_reference(gradient):
        cfg = ReferenceConfig(lr=0.05, **config)
        return reference_run(problem.initial(), gradient, steps, partition, cfg)[0]

    want = conditioning.path_of(run_reference, problem.gradient)
    eps = conditioning.trajectory_eps(conditioning.EPS, config["hessian_momentum"])
    deviation = conditioning.joint_spread(
        problem.gradient, eps, (run_reference, want), (run_mlbfgs, got)
    )
    largest = max(sum(problem.sizes[i] for i in block) for block in partition)
    units = conditioning.rounding_units(largest, config["history_size"])
    compared = conditioning.compare_tame(got, want, deviation, units, "trajectory", eps)
    stats = opt.stats()
    event(f"blocks: {len(partition)}")
    wrapped = all(s["pairs_pushed"] > config["history_size"] for s in stats)
    event(f"ring wrapped in every block: {wrapped}")
    event(f"steps compared: {'all' if compared == steps + 1 else 'before divergence'}")
    target(float(compared), label="steps compared")


@given(
    seed=st.integers(0, 1000),
    update_every=st.integers(1, 5),
    history_size=st.integers(1, 4),
    hessian_momentum=st.sampled_from([0.0, 0.5, 0.9]),
    momentum=st.sampled_from([0.0, 0.5]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    step_norm=st.sampled_from(["none", "gradient", "trust", "unit"]),
    pair_momentum=st.sampled_from([0.0, 0.5, 0.9]),
    averaging=st.sampled_from(["mean", "sum"]),
    restart_grad_average=st.booleans(),
    pair_timing=st.sampled_from(["after_step", "before_step"]),
    blocks=st.sampled_from([None, 2, [[3, 0], [2, 1]]]),
    h0=st.sampled_from(["gamma", "adam"]),
)
def test_step_control_matches_reference(seed, blocks, **config) -> None:
    """Every step-control option, every released-code behaviour and both initial matrices,
    in any combination.

    Damped only: undamped pairs may sit just above the acceptance threshold, where
    rounding alone decides between two different runs; the paper-literal test above
    covers them.
    """
    problem = NoisyQuadratic(SHAPES, seed=seed, noise=0.1)
    steps, lr = 30, 0.05
    runs: list[mlbfgs.MLBFGS] = []

    def run_mlbfgs(gradient):
        params = problem.initial()
        runs.append(mlbfgs.MLBFGS(params, blocks=blocks, lr=lr, **config))
        for t in range(1, steps + 1):
            runs[-1].step(gradient(t, params))
        return params

    got = conditioning.path_of(run_mlbfgs, problem.gradient)
    partition = [list(layout.indices) for layout in runs[0].layouts]

    diagnostics: dict[str, float] = {}

    def run_reference(gradient):
        cfg = ReferenceConfig(lr=lr, **config)
        return reference_run(problem.initial(), gradient, steps, partition, cfg, diagnostics)[0]

    want = conditioning.path_of(run_reference, problem.gradient)
    # h0="adam" keeps one more average, v (adam_beta2 0.999), rounded in place like Eq (5)'s.
    decay = max(config["hessian_momentum"], 0.999 if config["h0"] == "adam" else 0.0)
    eps = conditioning.trajectory_eps(conditioning.EPS, decay)
    deviation = conditioning.joint_spread(
        problem.gradient, eps, (run_reference, want), (run_mlbfgs, got)
    )
    largest = max(sum(problem.sizes[i] for i in block) for block in partition)
    # Rescaling H g adds two inner products of length n per block and step (g^T g and
    # d^T d, or the sum over blocks of the latter) to each computation: 2 * 2n roundings.
    # The rounding of H g, which an ill-conditioned H magnifies in the compact form, is in
    # the optimizer's own spread.
    units = conditioning.rounding_units(largest, config["history_size"]) + 4 * largest
    condition = diagnostics.get("condition", 1.0)
    event(f"cond(H) {'> 1e3' if condition > 1e3 else '<= 1e3'}")
    compared = conditioning.compare_tame(got, want, deviation, units, "step control", eps)
    event(f"steps compared: {'all' if compared == steps + 1 else 'before divergence'}")


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_presets_are_named_option_sets(preset) -> None:
    from mlbfgs.core import PRESETS

    opt = mlbfgs.MLBFGS([np.zeros(3)], preset=preset)
    for key, value in PRESETS[preset].items():
        assert getattr(opt.config, key) == value, key
    # An explicit value overrides the preset; the other preset values stay.
    opt = mlbfgs.MLBFGS([np.zeros(3)], preset=preset, pair_momentum=0.3)
    assert opt.config.pair_momentum == 0.3
    assert opt.config.step_norm == PRESETS[preset]["step_norm"]


def test_released_preset_preconditions_from_step_2T() -> None:
    """Pairs are used in the step they are formed in: step 2T already preconditions."""
    problem = NoisyQuadratic([(6,)], seed=3, noise=0.05)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=3, momentum=0.0, preset="released")
    assert opt.config.warmup_steps == 5
    for t in range(1, 6):
        g = problem.gradient(t, params)
        expected = params[0] - 0.05 * g[0]  # warm-up: SGD, not normalised
        opt.step(g)
        np.testing.assert_allclose(params[0], expected, rtol=1e-14)
    g = problem.gradient(6, params)[0]
    before = params[0].copy()
    opt.step([g])
    assert opt.stats()[0]["pairs_stored"] == 1
    step = (before - params[0]) / 0.05
    np.testing.assert_allclose(np.linalg.norm(step), 1.0, rtol=1e-12)  # unit norm
    assert not np.allclose(step, g / np.linalg.norm(g))  # and H g, not g


def test_warmup_is_sgd_with_heavy_ball_and_first_pair_at_2T() -> None:
    problem = NoisyQuadratic([(6,)], seed=1, noise=0.05)
    update_every, lr, momentum, wd = 3, 0.1, 0.9, 0.01
    params = problem.initial()
    opt = mlbfgs.MLBFGS(
        params, lr=lr, update_every=update_every, momentum=momentum, weight_decay=wd, preset="paper"
    )
    theta, buffer = params[0].copy(), None
    for t in range(1, 2 * update_every + 1):
        g = problem.gradient(t, params)
        d = g[0] + wd * theta  # weight decay first
        buffer = d.copy() if buffer is None else momentum * buffer + d  # heavy ball
        theta = theta - lr * buffer
        opt.step(g)
        np.testing.assert_array_equal(params[0], theta)  # warm-up: plain SGD, bitwise
        expected_pairs = 1 if t == 2 * update_every else 0
        assert opt.stats()[0]["pairs_pushed"] == expected_pairs, t
    # Step 2T + 1 is the first preconditioned step: d = H g from the single pair.
    t = 2 * update_every + 1
    g = problem.gradient(t, params)[0] + wd * params[0]
    s_hist, y_hist = opt._blocks[0].history.chronological(np)
    buffer = momentum * buffer + two_loop(g, s_hist, y_hist)
    expected = params[0] - lr * buffer
    opt.step(problem.gradient(t, params))
    np.testing.assert_allclose(params[0], expected, rtol=1e-12)
    assert not np.allclose(expected, params[0] - lr * (momentum * buffer + g))


def test_averages_start_at_first_step_without_bias() -> None:
    problem = NoisyQuadratic([(4,)], seed=2)
    params = problem.initial()
    theta1 = params[0].copy()
    opt = mlbfgs.MLBFGS(params, update_every=5, hessian_momentum=0.9)
    g1 = problem.gradient(1, params)
    opt.step(g1)
    averages = opt._blocks[0].averages
    np.testing.assert_array_equal(averages.theta, theta1)
    np.testing.assert_array_equal(averages.grad, g1[0])
    theta2 = params[0].copy()
    g2 = problem.gradient(2, params)
    opt.step(g2)
    np.testing.assert_allclose(averages.theta, 0.9 * theta1 + 0.1 * theta2, rtol=1e-15)
    np.testing.assert_allclose(averages.grad, 0.9 * g1[0] + 0.1 * g2[0], rtol=1e-15)


def test_ring_buffer_keeps_the_newest_pairs() -> None:
    problem = NoisyQuadratic([(5,), (3,)], seed=3, noise=0.2)
    steps, update_every, history = 60, 2, 3
    params, opt = run_optimizer(
        problem, steps, None, lr=0.05, update_every=update_every, history_size=history
    )
    _, pairs = reference_run(
        problem.initial(),
        problem.gradient,
        steps,
        [[0, 1]],
        ReferenceConfig(lr=0.05, update_every=update_every, history_size=history),
    )
    stats = opt.stats()[0]
    assert stats["pairs_stored"] == history
    assert stats["pairs_pushed"] + stats["pairs_rejected"] == steps // update_every - 1
    s_hist, y_hist = opt._blocks[0].history.chronological(np)
    np.testing.assert_allclose(s_hist, np.stack([s for s, _ in pairs[0]]), rtol=1e-8)
    np.testing.assert_allclose(y_hist, np.stack([y for _, y in pairs[0]]), rtol=1e-8)


def test_blocks_never_mix() -> None:
    """A block's trajectory depends only on its own parameters' gradients."""
    problem = NoisyQuadratic([(4,), (4,)], seed=4, noise=0.1)
    params = problem.initial()
    two_blocks = mlbfgs.MLBFGS(params, lr=0.05, update_every=3, blocks=[[0], [1]])
    alone = [problem.initial()[0]]
    one_block = mlbfgs.MLBFGS(alone, lr=0.05, update_every=3)
    # (The default step norm is per block; "unit" couples the blocks' lengths by design.)
    for t in range(1, 31):
        grads = problem.gradient(t, params)
        two_blocks.step(grads)
        one_block.step([grads[0]])
        np.testing.assert_array_equal(alone[0], params[0])
    assert two_blocks.stats()[0]["pairs_pushed"] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype) -> None:
    problem = NoisyQuadratic([(8,), (2, 3)], seed=5, noise=0.1)
    params = problem.initial(dtype)
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=2)
    for t in range(1, 12):
        opt.step(problem.gradient(t, params))
    assert all(p.dtype == dtype for p in params)
    state = opt.state_dict()
    for key in ("block0.history.pairs", "block0.averages.theta", "block0.momentum_buffer"):
        assert state[key].dtype == dtype, key
