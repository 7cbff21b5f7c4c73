"""Documented guarantees of ``mlbfgs.MLBFGS`` that no other test pins down: the damping
hyperparameters reach the step, pairs that cannot be used are rejected at the optimizer
level, ``stats()["gamma"]``, and how diverging runs are compared."""

from __future__ import annotations

from typing import Any

import conditioning
import numpy as np
import pytest
from problems import NoisyQuadratic
from reference import ReferenceConfig, reference_run

import mlbfgs

# -- tau0, sigma_low and sigma_high, through the optimizer -----------------------------------

DAMPED = {
    "lr": 0.02,
    "update_every": 2,
    "history_size": 3,
    "hessian_momentum": 0.5,
    "momentum": 0.5,
    "tau0": 0.7,
    "sigma_low": 0.3,
    "sigma_high": 3.0,
}
STEPS = 40


def indefinite_gradient(t: int, params: list[np.ndarray]) -> list[np.ndarray]:
    """``B theta + noise`` with B's eigenvalues from -0.5 to 8: pairs land below sigma_low,
    inside [sigma_low, sigma_high] and above it."""
    rng = np.random.default_rng(31)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    hessian = (q * np.linspace(-0.5, 8.0, 6)) @ q.T
    noise = 0.05 * np.random.default_rng([31, t]).standard_normal(6)
    return [hessian @ params[0] + noise]


def start() -> list[np.ndarray]:
    return [np.random.default_rng(32).standard_normal(6)]


def damped_run(gradient: Any, mus: list[float] | None = None, **change: Any) -> list[np.ndarray]:
    params = start()
    opt = mlbfgs.MLBFGS(params, preset="paper", **{**DAMPED, **change})
    for t in range(1, STEPS + 1):
        opt.step(gradient(t, params))
        if mus is not None and t % DAMPED["update_every"] == 0 and t > DAMPED["update_every"]:
            mus.append(opt.stats()[0]["mu"])
    return params


def test_tau0_sigma_low_and_sigma_high_reach_the_step() -> None:
    """The optimizer with non-default tau0, sigma_low, sigma_high follows the reference
    with the same values; and each value matters: with its default instead, the run
    differs far beyond the tolerance (so a value silently replaced is caught)."""
    mus: list[float] = []
    got = conditioning.path_of(lambda g: damped_run(g, mus), indefinite_gradient)
    config = {k: v for k, v in DAMPED.items() if k != "lr"}

    def run_reference(gradient: Any) -> list[np.ndarray]:
        cfg = ReferenceConfig(lr=DAMPED["lr"], **config)
        return reference_run(start(), gradient, STEPS, [[0]], cfg)[0]

    want = conditioning.path_of(run_reference, indefinite_gradient)
    eps = conditioning.trajectory_eps(conditioning.EPS, DAMPED["hessian_momentum"])
    deviation = conditioning.spread(run_reference, indefinite_gradient, want, eps)
    units = conditioning.rounding_units(6, DAMPED["history_size"])
    assert conditioning.compare_tame(got, want, deviation, units, "damped", eps) == STEPS + 1
    # All three cases of Eq (7) occurred.
    assert min(mus) < DAMPED["sigma_low"] and max(mus) > DAMPED["sigma_high"]
    assert any(DAMPED["sigma_low"] < mu < DAMPED["sigma_high"] for mu in mus)
    tolerance = units * max(float(np.max(deviation)), conditioning.EPS)
    for name, default in (("tau0", 0.99), ("sigma_low", 0.01), ("sigma_high", 1.5)):
        other = conditioning.flat(damped_run(indefinite_gradient, **{name: default}))
        assert np.max(np.abs(other - got[-1])) > 1e6 * tolerance, name


# -- pairs the optimizer must reject ---------------------------------------------------------


@pytest.mark.parametrize("damping", [True, False])
def test_pair_whose_y_hat_overflows_is_rejected(damping: bool) -> None:
    """``y_hat^T y_hat`` overflows while ``s^T y`` and ``s^T s`` are finite: y has a huge
    entry where s is zero. Pushed, gamma = s^T y_hat / inf = 0 and the compact form's
    middle matrix (0 * inf) would turn every later direction into NaN."""
    params = [np.array([1.0, 0.0])]
    opt = mlbfgs.MLBFGS(
        params,
        lr=0.1,
        update_every=1,
        history_size=2,
        hessian_momentum=0.0,
        momentum=0.0,
        warmup=2,
        damping=damping,
        preset="paper",  # (the default step norm would skip the step: see below)
    )

    def gradient(t: int) -> list[np.ndarray]:
        huge = 1e160 if t == 4 else 0.0  # probe W g stays finite: the pairs are 0 there
        return [np.array([params[0][0], huge])]

    for t in range(1, 4):
        opt.step(gradient(t))
    assert opt.stats()[0]["pairs_pushed"] == 2  # at steps 2 and 3, curvature 1
    stored = opt.state_dict()["block0.history.pairs"]
    with np.errstate(over="ignore"):  # y_hat^T y_hat overflows, as intended
        opt.step(gradient(4))  # the pair formed at step 4 has y = (0, 1e160)
    stats = opt.stats()[0]
    assert stats["pairs_pushed"] == 2 and stats["pairs_rejected"] == 1
    assert stats["mu"] == pytest.approx(1.0)  # its curvature was fine: only y_hat overflowed
    np.testing.assert_array_equal(opt.state_dict()["block0.history.pairs"], stored)
    assert np.isfinite(stats["gamma"]) and stats["gamma"] > 0
    for t in range(5, 8):
        with np.errstate(over="ignore"):  # the pair of step 5 spans the huge step: s^T y = inf
            opt.step([np.array([params[0][0], 0.0])])
        assert np.isfinite(params[0]).all(), t
    assert opt.stats()[0]["skipped_steps"] == 0


def test_pair_with_zero_s_is_rejected_and_pairs_resume() -> None:
    """Zero gradients for a whole period leave theta (and so s) exactly zero-length."""
    params = [np.array([1.0, -2.0])]
    opt = mlbfgs.MLBFGS(params, lr=0.1, update_every=2, hessian_momentum=0.0, momentum=0.0)
    for _ in range(3):
        opt.step([np.zeros(2)])
    opt.step([np.array([1.0, 1.0])])  # step 4: s = 0, y = (1, 1)
    stats = opt.stats()[0]
    assert (stats["pairs_pushed"], stats["pairs_rejected"]) == (0, 1)
    assert np.isnan(stats["mu"]) and np.isfinite(params[0]).all()
    for _ in range(2):
        opt.step([params[0].copy()])  # g = theta: curvature 1
    stats = opt.stats()[0]
    assert (stats["pairs_pushed"], stats["pairs_rejected"]) == (1, 1)
    assert np.isfinite(stats["mu"]) and np.isfinite(params[0]).all()


# -- stats()["gamma"] ------------------------------------------------------------------------


def test_gamma_is_that_of_the_newest_pair() -> None:
    problem = NoisyQuadratic([(3, 4), (5,)], seed=13, noise=0.3)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=2, history_size=3, hessian_momentum=0.5)
    assert np.isnan(opt.stats()[0]["gamma"])
    n = problem.n
    # Both sides are ratios of two float64 inner products of the same stored vectors,
    # summed in different orders: each within n eps relative (Higham eq. (3.5)).
    tolerance = 4 * n * conditioning.EPS
    seen = 0
    for t in range(1, 31):
        opt.step(problem.gradient(t, params))
        s_hist, y_hist = opt._blocks[0].history.chronological(np)
        if len(s_hist) == 0:
            assert np.isnan(opt.stats()[0]["gamma"])
            continue
        gammas = np.einsum("ij,ij->i", s_hist, y_hist) / np.einsum("ij,ij->i", y_hist, y_hist)
        gamma = opt.stats()[0]["gamma"]
        assert abs(gamma - gammas[-1]) <= tolerance * gammas[-1], t
        if len(gammas) > 1 and abs(gammas[0] - gammas[-1]) > 1e3 * tolerance * gammas[-1]:
            seen += 1  # the newest pair's gamma, distinguishable from the oldest's
    assert seen >= 5


# -- a run that diverges ---------------------------------------------------------------------


def test_diverging_run_is_compared_until_it_diverges() -> None:
    """A run that blows up (T = 1, beta = 0.5: every pair from one noisy step) is compared
    elementwise until the reference passes GROWTH_BOUND, then must diverge at the same step;
    relative to their own scale, the end points still agree."""
    problem = NoisyQuadratic([(3, 4), (5,), (2, 2, 2), ()], seed=280, noise=0.1)
    config = {"update_every": 1, "history_size": 4, "hessian_momentum": 0.5, "momentum": 0.0}
    config |= {"warmup": 0}
    partition = [[3, 0], [2, 1]]
    steps = 40

    def run_mlbfgs(gradient: Any) -> list[np.ndarray]:
        params = problem.initial()
        opt = mlbfgs.MLBFGS(params, lr=0.05, blocks=partition, preset="paper", **config)
        for t in range(1, steps + 1):
            opt.step(gradient(t, params))
        return params

    def run_reference(gradient: Any) -> list[np.ndarray]:
        cfg = ReferenceConfig(lr=0.05, **config)
        return reference_run(problem.initial(), gradient, steps, partition, cfg)[0]

    got = conditioning.path_of(run_mlbfgs, problem.gradient)
    want = conditioning.path_of(run_reference, problem.gradient)
    eps = conditioning.trajectory_eps(conditioning.EPS, config["hessian_momentum"])
    deviation = conditioning.spread(run_reference, problem.gradient, want, eps)
    units = conditioning.rounding_units(13, 4)
    compared = conditioning.compare_tame(got, want, deviation, units, "diverging", eps)
    assert 5 < compared < steps
    assert np.max(np.abs(want[-1])) > 1e30 and np.isfinite(got[-1]).all()
    # Relative to its own scale the end point is still the reference's: the divergence
    # amplifies rounding no faster than it amplifies theta itself (to a loose 1e-6).
    scale = np.max(np.abs(want[-1]))
    assert np.max(np.abs(got[-1] - want[-1])) <= 1e-6 * scale


def test_gradient_whose_norm_overflows_is_skipped_by_the_default_step() -> None:
    """Grafting rescales H g to |g|: a finite gradient whose g^T g overflows would give an
    infinite step, so that norm is part of the finiteness probe and the block skips."""
    params = [np.array([1.0, 0.0])]
    opt = mlbfgs.MLBFGS(params, lr=0.1, update_every=1, history_size=2, momentum=0.0, warmup=2)
    for _ in range(3):
        opt.step([np.array([params[0][0], 0.0])])
    assert opt.stats()[0]["pairs_stored"] == 2
    before = params[0].copy()
    with np.errstate(over="ignore"):
        opt.step([np.array([params[0][0], 1e160])])  # finite, but 1e160^2 overflows
    np.testing.assert_array_equal(params[0], before)
    assert opt.stats()[0]["skipped_steps"] == 1
    opt.step([np.array([params[0][0], 0.0])])  # and the next finite step is taken
    assert np.all(np.isfinite(params[0])) and not np.array_equal(params[0], before)
