"""The counters of ``stats()`` (``engine/report.py``): skipped steps, pushed and rejected
pairs with their mu and tau, and the heavy-ball buffer that momentum 0 never keeps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import mlbfgs


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
