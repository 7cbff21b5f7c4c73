"""Step control (``core/step_norm.py``): the scale of each block's ``H g`` under
``step_norm="gradient"`` (grafting) and ``"trust"`` (only shortens), the norms they need,
and a zero gradient under every step norm."""

from __future__ import annotations

import re

import numpy as np
import pytest

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core.step_norm import direction_scales


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


def test_gradient_step_norm_needs_every_preconditioned_blocks_gradient_norm() -> None:
    d = np.ones(3)
    kernels = kernels_for(np)
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
    d = np.ones(3)
    kernels = kernels_for(np)
    squares = [np.float64(9.0), np.float64(1.0)]
    trust = direction_scales("trust", [0, 1], squares, [d, d], kernels, None)
    graft = direction_scales("gradient", [0, 1], squares, [d, d], kernels, None)
    assert float(trust[0]) == 1.0 and float(graft[0]) == pytest.approx(3**0.5)
    assert float(trust[1]) == float(graft[1]) == pytest.approx(3**-0.5)
    message = "step_norm='trust' needs g^T g of every preconditioned block"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        direction_scales("trust", [0], [None], [d], kernels, None)
