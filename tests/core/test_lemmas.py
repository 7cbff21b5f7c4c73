"""The paper's Lemmas 1 and 2 hold for the implementation."""

from __future__ import annotations

import numpy as np
from problems import NoisyQuadratic

import mlbfgs
from mlbfgs.core import Kernels, MomentumAverages


def test_lemma2_noise_free_pairs_satisfy_secant_of_true_hessian() -> None:
    """On a noise-free quadratic every stored pair has y = B s (undamped, as in Lemma 2)."""
    problem = NoisyQuadratic([(6,), (4,)], seed=21, noise=0.0)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.02, update_every=3, history_size=4, damping=False)
    for t in range(1, 40):
        opt.step(problem.gradient(t, params))
    s_hist, y_hist = opt._blocks[0].history.chronological(np)
    assert len(s_hist) == 4
    np.testing.assert_allclose(y_hist, s_hist @ problem.hessian, rtol=1e-9, atol=1e-12)


def test_lemma2_with_damping_stores_the_damped_secant() -> None:
    """With damping, y_hat = tau B s + (1 - tau) s for the pair's tau."""
    problem = NoisyQuadratic([(5,)], seed=22, noise=0.0)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.02, update_every=3, history_size=1)
    for t in range(1, 40):
        opt.step(problem.gradient(t, params))
    (s,), (y_hat,) = opt._blocks[0].history.chronological(np)
    tau = opt.stats()[0]["tau"]
    np.testing.assert_allclose(y_hat, tau * problem.hessian @ s + (1 - tau) * s, rtol=1e-9)


def test_lemma1_momentum_shrinks_gradient_noise_variance() -> None:
    """Var of M_g's noise -> (1 - beta) / (1 + beta) * eps^2 for i.i.d. gradient noise.

    200,000 independent coordinates give a relative standard error of the empirical
    variance of about 0.3%; the tolerance is 3%.
    """
    beta, eps, n, steps = 0.9, 0.7, 200_000, 300
    rng = np.random.default_rng(1)
    xp = __import__("array_api_compat").array_namespace(np.ones(1))
    kernels = Kernels(xp)
    averages = MomentumAverages.start(xp, np.zeros(n), eps * rng.standard_normal(n))
    for _ in range(steps):
        averages.update(np.zeros(n), eps * rng.standard_normal(n), beta, kernels)
    expected = (1 - beta) / (1 + beta) * eps**2
    np.testing.assert_allclose(np.var(averages.grad), expected, rtol=0.03)
