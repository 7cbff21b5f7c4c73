"""The core runs unchanged on array_api_strict arrays: it uses only the standard, and every
array it allocates stays on the parameters' device (array_api_strict refuses to mix them)."""

from __future__ import annotations

from typing import Any

import array_api_strict as xps
import numpy as np
from helpers import pure_run
from problems import NoisyQuadratic

import mlbfgs
from mlbfgs.core import MLBFGSConfig, damp, two_loop


def test_whole_run_on_strict_arrays_matches_numpy() -> None:
    problem = NoisyQuadratic([(3, 2), (4,), ()], seed=3, noise=0.1)
    config = {"lr": 0.05, "update_every": 2, "history_size": 3, "weight_decay": 0.01, "blocks": 2}
    reference = problem.initial()
    numpy_opt = mlbfgs.MLBFGS(reference, **config)
    strict = [xps.asarray(p) for p in problem.initial()]
    strict_opt = mlbfgs.MLBFGS(strict, **config)
    for t in range(1, 30):
        grads = problem.gradient(t, reference)
        numpy_opt.step(grads)
        strict_opt.step([xps.asarray(g) for g in grads])
    for a, b in zip(reference, strict, strict=True):
        # Same operations in the same order on the same underlying library: bitwise.
        np.testing.assert_array_equal(np.asarray(b), a)
    assert strict_opt.stats()[0]["pairs_stored"] == 3

    # And a checkpoint moves between the two libraries.
    resumed = [xps.asarray(p) for p in reference]
    other = mlbfgs.MLBFGS(resumed, **config)
    other.load_state_dict(numpy_opt.state_dict())
    grads = problem.gradient(30, reference)
    numpy_opt.step(grads)
    other.step([xps.asarray(g) for g in grads])
    for a, b in zip(reference, resumed, strict=True):
        np.testing.assert_array_equal(np.asarray(b), a)


def test_public_primitives_on_strict_arrays() -> None:
    rng = np.random.default_rng(0)
    s, y = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    y = y + 2 * s
    g = rng.standard_normal(5)
    expected = two_loop(g, s, y)
    got = two_loop(xps.asarray(g), xps.asarray(s), xps.asarray(y))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-13)
    y_hat, tau = damp(xps.asarray(s[0]), xps.asarray(-y[0]), 0.99, 0.01, 1.5)
    expected_hat, expected_tau = damp(s[0], -y[0], 0.99, 0.01, 1.5)
    assert tau == expected_tau
    np.testing.assert_array_equal(np.asarray(y_hat), expected_hat)


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


def test_the_pure_state_keeps_its_dtypes_on_the_parameters_device() -> None:
    """``core.functional``'s state, before and after steps: vectors and pairs in the
    parameters' dtype (float32 here, where array_api_strict's default is float64), the Gram
    algebra in the given dtype, int32 counters (a jitted step's carry must keep one type),
    no second moment without ``h0="adam"``, every array on the parameters' device
    (array_api_strict refuses to mix devices)."""
    other = xps.Device("device1")
    theta = xps.asarray(np.linspace(-1.0, 1.0, 5), dtype=xps.float32, device=other)
    vectors = {"average_theta", "average_grad", "snapshot_theta", "snapshot_grad", "momentum"}

    def check(state: Any) -> None:
        assert state.blocks[0].second_moment.shape == (0,)
        assert state.step.dtype == xps.int32 and state.step.device == other
        for name, value in state.blocks[0]._asdict().items():
            assert value.device == other, name
            if name in vectors | {"pairs", "second_moment"}:
                assert value.dtype == xps.float32, name
            elif name in {"pushed", "rejected", "skipped"}:
                assert value.dtype == xps.int32, name
            elif name in {"started", "has_snapshot"}:
                assert value.dtype == xps.bool, name
            else:
                assert value.dtype == xps.float64, name

    config = MLBFGSConfig(update_every=1, history_size=2)
    _, state = pure_run(xps, theta, config, lambda t, theta: 3.0 * theta, 2, each=check)
    assert int(state.blocks[0].pushed) == 1  # the pair paths ran too


def test_the_pure_step_with_pair_momentum_uses_only_the_standard() -> None:
    """The mix with the newest stored pair reads two rows of the history by an array index
    (``take``; the standard refuses an array index beside a slice), and follows NumPy
    bitwise on array_api_strict's second device."""
    config = MLBFGSConfig(update_every=1, history_size=2, pair_momentum=0.9)

    def run(xp: Any, where: Any) -> tuple[Any, int]:
        start = xp.asarray(np.linspace(-1.0, 1.0, 5), device=where)
        theta, state = pure_run(xp, start, config, lambda t, theta: 3.0 * theta + 0.01 * (t - 1), 8)
        return theta, int(state.blocks[0].pushed)

    strict, pushed = run(xps, xps.Device("device1"))
    reference, reference_pushed = run(np, "cpu")
    assert pushed == reference_pushed == 7  # the mix ran on 6 of them
    np.testing.assert_array_equal(np.asarray(strict.to_device(xps.Device("CPU_DEVICE"))), reference)
