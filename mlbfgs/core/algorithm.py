"""Algorithm 1 of the paper, for one curvature block.

The orchestrator (``mlbfgs.optimizer``) gathers each block's parameters and gradients
into flat vectors, applies weight decay, computes the step's first reduction (which also
certifies that the gradient is finite) and then calls :func:`block_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .averages import MomentumAverages
from .config import MLBFGSConfig
from .curvature import curvature_pair, prepare_pair
from .first_order import heavy_ball, in_warmup
from .history import CurvatureHistory
from .kernels import Kernels
from .preconditioner import CompactForm, compact_form, precondition
from .types import Array


@dataclass
class BlockStats:
    """Counters reported by ``MLBFGS.stats()``."""

    pairs_pushed: int = 0
    """Pairs pushed so far (the buffer holds the newest ``history`` of them)."""
    pairs_rejected: int = 0
    """Pairs not pushed: zero s, non-finite, or (undamped) non-positive curvature."""
    skipped_steps: int = 0
    """Steps this block skipped because its gradient was not finite."""
    mu: float = math.nan
    """``s^T y / s^T s`` of the newest pair formed."""
    tau: float = math.nan
    """Damping coefficient of the newest pair formed (1.0 when undamped)."""


@dataclass
class BlockState:
    """Everything one curvature block remembers between steps."""

    history: CurvatureHistory
    averages: MomentumAverages | None = None
    momentum_buffer: Array | None = None
    form: CompactForm | None = None
    stats: BlockStats = field(default_factory=BlockStats)

    def preconditions(self, t: int, config: MLBFGSConfig) -> bool:
        """Whether step t uses ``d = H g`` rather than the SGD warm-up."""
        return not in_warmup(t, config.warmup_steps, len(self.history))


def block_step(
    block: BlockState,
    theta: Array,
    g: Array,
    projection: Array | None,
    t: int,
    lr: float,
    config: MLBFGSConfig,
    kernels: Kernels,
) -> Array:
    """Algorithm 1, lines 5-18: return theta_{t+1} for one block and update its state.

    ``g`` already includes weight decay. ``projection`` is ``history.pairs @ g`` when the
    block preconditions this step (see :meth:`BlockState.preconditions`), else ``None``.
    """
    if block.averages is None:  # line 1: the averages start at theta_1 and g_1
        block.averages = MomentumAverages.start(kernels.xp, theta, g)
    else:  # line 6, Eq (5)
        block.averages.update(theta, g, config.hessian_momentum, kernels)

    if projection is None:  # line 8: SGD warm-up
        direction = g
    else:  # line 10: d = H g, Algorithm 2 in compact form
        assert block.form is not None
        direction = precondition(block.history, block.form, g, projection, kernels)

    direction = heavy_ball(block.momentum_buffer, direction, config.momentum, kernels)
    if config.momentum != 0.0:
        block.momentum_buffer = direction
    theta_next = kernels.descend(theta, direction, lr)  # line 11, Eq (2)

    if t % config.update_every == 0:  # line 13
        update_curvature(block, config, kernels)
    return theta_next


def skip_step(block: BlockState, t: int, config: MLBFGSConfig) -> None:
    """Step t skipped (non-finite gradient): nothing of the block changes but a counter.

    At a curvature boundary the snapshot is dropped as well, so that no pair ever spans
    more than T steps (DESIGN.md section 3.6: a pair needs the snapshot from step t - T);
    the next boundary then only takes a snapshot.
    """
    block.stats.skipped_steps += 1
    if t % config.update_every == 0 and block.averages is not None:
        block.averages.snapshot_theta = block.averages.snapshot_grad = None


def update_curvature(block: BlockState, config: MLBFGSConfig, kernels: Kernels) -> None:
    """Lines 14-17: form the pair of Eq (6), damp it by Eq (7), push it; then snapshot."""
    averages = block.averages
    assert averages is not None
    if averages.snapshot_theta is not None:
        s, y = curvature_pair(averages)  # Eq (6)
        outcome = prepare_pair(  # Eq (7)
            kernels,
            s,
            y,
            damping=config.damping,
            tau0=config.tau0,
            sigma_low=config.sigma_low,
            sigma_high=config.sigma_high,
        )
        block.stats.mu, block.stats.tau = outcome.mu, outcome.tau
        if outcome.accepted:
            block.history.push(outcome.s, outcome.y_hat, kernels)  # UpdateHessian
            block.form = compact_form(kernels.xp, block.history)
            block.stats.pairs_pushed += 1
        else:
            block.stats.pairs_rejected += 1
    averages.take_snapshot(kernels.xp)
