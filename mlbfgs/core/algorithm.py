"""Algorithm 1 of the paper, for the curvature blocks of one rank.

The engine (``mlbfgs.engine``) gathers each block's parameters and gradients
into flat vectors, applies weight decay, certifies the gradients finite and then calls
:func:`algorithm_1` with the blocks whose gradient is finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .averages import MomentumAverages, stalled_share
from .config import MLBFGSConfig
from .curvature import curvature_pair, mix_with_newest, prepare_pair
from .first_order import heavy_ball, in_warmup
from .history import CurvatureHistory
from .initial_matrix import (
    delta_root,
    fixed_gamma,
    scaled_input,
    unit_metric_pair,
    update_moment,
)
from .kernels import Kernels
from .preconditioner import CompactForm, compact_form, precondition
from .step_norm import BlockSum, direction_scales, needs_gradient_norm
from .types import Array


@dataclass
class BlockStats:
    """Counters reported by ``MLBFGS.stats()``."""

    pairs_pushed: int = 0
    """Pairs pushed so far (the buffer holds the newest ``history_size`` of them)."""
    pairs_rejected: int = 0
    """Pairs not pushed: zero s, non-finite, or (undamped) non-positive curvature."""
    skipped_steps: int = 0
    """Steps this block skipped because its gradient was not finite."""
    mu: float = math.nan
    """``s^T y / s^T s`` of the newest pair formed."""
    tau: float = math.nan
    """Damping coefficient of the newest pair formed (1.0 when undamped)."""
    average_stalled: float = math.nan
    """Share of M_theta's entries that did not move over the newest pair's T steps
    although Eq (5) would have moved them (``averages.stalled_share``); NaN
    before the first pair is formed."""


@dataclass
class BlockState:
    """Everything one curvature block remembers between steps."""

    history: CurvatureHistory
    averages: MomentumAverages | None = None
    momentum_buffer: Array | None = None
    """The heavy-ball buffer, or Adam's first moment m with ``h0="adam"``."""
    second_moment: Array | None = None
    """v of ``h0="adam"`` (``core/initial_matrix.py``); ``None`` otherwise."""
    form: CompactForm | None = None
    stats: BlockStats = field(default_factory=BlockStats)

    def preconditions(self, t: int, config: MLBFGSConfig) -> bool:
        """Whether step t uses ``d = H g`` with the history as it is now."""
        return not in_warmup(t, config.warmup_steps, len(self.history))


@dataclass(frozen=True)
class BlockInput:
    """One block's share of step t, as the orchestrator prepared it."""

    index: int
    block: BlockState
    theta: Array
    g: Array
    """The gradient, weight decay included."""
    projection: Array | None
    """``history.pairs @ g`` if already computed for this step's history, else ``None``
    (always with ``h0="adam"``, whose product is with the scaled first moment)."""
    grad_sq: Array | None = None
    """``g^T g``; needed with ``step_norm="gradient"`` (the orchestrator computes it with
    the step's finiteness probe)."""


@dataclass(frozen=True)
class Direction:
    """One block's direction at step t, before step control and heavy ball."""

    first_order: Array
    """``H_0 g`` without the pairs' correction: g, or Adam's ``D m^`` with ``h0="adam"``. The step
    in warm-up, and the length ``step_norm="gradient"`` gives the preconditioned one."""
    first_order_sq: Array | None
    """Its squared norm, where ``step_norm="gradient"`` needs it."""
    preconditioned: Array | None
    """``H g`` (a fresh array), or ``None`` in warm-up."""


def moment_steps(block: BlockState, t: int) -> int:
    """k of Adam's bias correction at step t: the block's moments took every step but its
    skipped ones."""
    return t - block.stats.skipped_steps


def is_boundary(t: int, config: MLBFGSConfig) -> bool:
    """Algorithm 1, line 13: a curvature pair is formed every T steps."""
    return t % config.update_every == 0


def algorithm_1(
    blocks: Sequence[BlockInput],
    t: int,
    lr: float,
    config: MLBFGSConfig,
    kernels: Kernels,
    sum_over_blocks: BlockSum,
) -> list[Array]:
    """Algorithm 1, lines 5-18: ``theta_{t+1}`` of each block, whose state is updated."""
    directions = [block_direction(item, t, config, kernels) for item in blocks]  # lines 5-10
    scales = direction_scales(  # step control (design §3.7)
        config.step_norm,
        [item.index for item in blocks],
        [d.first_order_sq for d in directions],
        [d.preconditioned for d in directions],
        kernels,
        sum_over_blocks,
    )
    return [
        block_update(
            item,
            d.first_order if d.preconditioned is None else d.preconditioned,
            scale,
            t,
            lr,
            config,
            kernels,
        )
        for item, d, scale in zip(blocks, directions, scales, strict=True)
    ]  # lines 11-17


def block_direction(item: BlockInput, t: int, config: MLBFGSConfig, kernels: Kernels) -> Direction:
    """Lines 5-10: update the averages (Eq (5)) and return ``H g`` (none in warm-up).

    With ``pair_timing="before_step"`` a boundary forms its pair first, so that the pair
    preconditions the step it is formed in. With ``h0="adam"`` H acts on Adam's first
    moment, in the coordinates where ``H_0`` is the identity (``core/initial_matrix.py``):
    ``H m^ = D^{1/2} H~ D^{1/2} m^``.
    """
    block, g = item.block, item.g
    if block.averages is None:  # line 1: the averages start at theta_1 and g_1
        block.averages = MomentumAverages.start(kernels.xp, item.theta, g)
    else:  # line 6, Eq (5)
        block.averages.update(item.theta, g, config.hessian_momentum, kernels, config.averaging)
    root = None
    if config.h0 == "adam":  # g becomes D^{1/2} m^, the input where H_0 is the identity
        root, g = adam_input(block, g, t, config, kernels)
    projection = item.projection
    if config.pair_timing == "before_step" and is_boundary(t, config):
        update_curvature(block, item.theta, item.g, t, config, kernels)
        projection = None  # the history may have changed
    first_order, first_order_sq = item.g, item.grad_sq
    if root is not None:
        first_order = root * g  # D m^, Adam's step
        if needs_gradient_norm(config.step_norm):
            first_order_sq = kernels.dot(first_order, first_order)
    if not block.preconditions(t, config):  # line 8: first-order warm-up
        return Direction(first_order, first_order_sq, None)
    if projection is None:
        projection = kernels.project(block.history.pairs, g)
    assert block.form is not None
    d = precondition(block.history, block.form, g, projection, kernels)  # line 10, Alg. 2
    if root is not None:
        d *= root
    return Direction(first_order, first_order_sq, d)


def adam_input(
    block: BlockState, g: Array, t: int, config: MLBFGSConfig, kernels: Kernels
) -> tuple[Array, Array]:
    """``h0="adam"``: update Adam's moments m and v in place; return ``D^{1/2}`` and
    ``D^{1/2} m^`` (``core/initial_matrix.py``)."""
    block.second_moment = update_moment(
        block.second_moment, g * g, config.adam_beta2, kernels, in_place=True
    )
    block.momentum_buffer = update_moment(
        block.momentum_buffer, g, config.momentum, kernels, in_place=True
    )
    steps = moment_steps(block, t)
    return scaled_input(kernels.xp, block.momentum_buffer, block.second_moment, steps, config)


def block_update(
    item: BlockInput,
    direction: Array,
    scale: Array | None,
    t: int,
    lr: float,
    config: MLBFGSConfig,
    kernels: Kernels,
) -> Array:
    """Lines 11-17: heavy ball and the update (Eq (2)); every T steps a new pair."""
    block = item.block
    if scale is not None:  # ``direction`` is H g, a fresh array: rescale it in place
        direction *= scale
    if config.h0 != "adam":  # Adam's first moment already carries the momentum
        direction = heavy_ball(
            block.momentum_buffer, direction, config.momentum, kernels, in_place=True
        )
        if config.momentum != 0.0:
            block.momentum_buffer = direction
    theta_next = kernels.descend(item.theta, direction, lr)  # line 11, Eq (2)
    if config.pair_timing == "after_step" and is_boundary(t, config):  # line 13
        update_curvature(block, item.theta, item.g, t, config, kernels)
    return theta_next


def skip_step(block: BlockState, t: int, config: MLBFGSConfig) -> None:
    """Step t skipped (non-finite gradient): nothing of the block changes but a counter.

    At a curvature boundary the snapshot is dropped as well, so that no pair ever spans
    more than T steps (a pair needs the snapshot from step t - T); the next boundary then
    only takes a snapshot.
    """
    block.stats.skipped_steps += 1
    if is_boundary(t, config) and block.averages is not None:
        block.averages.snapshot_theta = block.averages.snapshot_grad = None


def update_curvature(
    block: BlockState, theta: Array, g: Array, t: int, config: MLBFGSConfig, kernels: Kernels
) -> None:
    """Lines 14-17: form the pair of Eq (6), damp it by Eq (7), push it; then snapshot.

    ``theta`` and ``g`` are theta_t and g_t, the last values Eq (5) averaged."""
    averages = block.averages
    assert averages is not None
    if averages.snapshot_theta is not None and averages.snapshot_grad is not None:
        xp = kernels.xp
        s, y = curvature_pair(  # Eq (6)
            averages.theta, averages.grad, averages.snapshot_theta, averages.snapshot_grad
        )
        stalled = stalled_share(
            xp, s, averages.theta, theta, config.hessian_momentum, config.averaging, xp.float64
        )
        block.stats.average_stalled = float(stalled)
        if config.h0 == "adam":  # the pair where H_0 is the identity
            assert block.second_moment is not None
            root = delta_root(xp, block.second_moment, moment_steps(block, t), config)
            s, y = unit_metric_pair(s, y, root)
        newest = block.history.newest(s.dtype)
        if config.pair_momentum != 0.0 and newest is not None:
            s, y = mix_with_newest(s, y, *newest, config.pair_momentum)
        outcome = prepare_pair(kernels, s, y, config)  # Eq (7)
        block.stats.mu, block.stats.tau = float(outcome.mu), float(outcome.tau)
        if bool(outcome.accepted):
            block.history.push(s, outcome.y_hat, kernels)  # UpdateHessian
            block.form = compact_form(kernels.xp, block.history, fixed_gamma(config))
            block.stats.pairs_pushed += 1
        else:
            block.stats.pairs_rejected += 1
    averages.take_snapshot(kernels.xp)
    if config.restart_grad_average:
        averages.grad[...] = g
