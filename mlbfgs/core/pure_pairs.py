"""The pure step's curvature pairs (``core/functional.py``): Eq (6), Eq (7) and the push
into the ring buffer, as selections and one ``Kernels.cond``.

The engine's ``algorithm.update_curvature`` and ``CurvatureHistory.push`` in the pure
shape: the same functions compute the pair (``curvature.py``), its damping and acceptance,
the Gram matrices' new products (``history.new_products``), gamma and the compact form
(``preconditioner.py``); only the state's updates differ (selections here, branches and
writes in place there).
"""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import device

from .averages import stalled_share
from .config import MLBFGSConfig
from .curvature import curvature_pair, mix_with_newest, prepare_pair
from .history import new_products
from .initial_matrix import delta_root, fixed_gamma, unit_metric_pair
from .kernels import Kernels, set_row
from .preconditioner import middle_matrix, newest_gamma
from .pure_state import PureBlock
from .types import Array


def form_pair(
    block: PureBlock,
    theta: Array,
    g: Array,
    t: Array,
    boundary: Array,
    config: MLBFGSConfig,
    kernels: Kernels,
    after: Array | None = None,
) -> PureBlock:
    """Lines 14-17 (``algorithm.update_curvature``) at a boundary of a block whose gradient
    is finite (``boundary``), else the block as it is: the pair of Eq (6), damped by Eq (7)
    and pushed if it has positive curvature; then the snapshot.

    The O(n) pieces run every step and are selected; the O(Mn) products with the history
    run only when a pair is pushed (:func:`push`). ``after``: the step's last read of the
    history (``H g``), which the push must follow (``Kernels.write_pair_if``).
    """
    xp = kernels.xp
    s, y = curvature_pair(  # Eq (6)
        block.average_theta, block.average_grad, block.snapshot_theta, block.snapshot_grad
    )
    stalled = stalled_share(
        xp, s, block.average_theta, theta, config.hessian_momentum, config.averaging,
        kernels.gram_dtype,
    )  # fmt: skip
    if config.h0 == "adam":  # the pair where H_0 is the identity
        root = delta_root(xp, block.second_moment, t - block.skipped, config)
        s, y = unit_metric_pair(s, y, root)
    capacity = config.history_size
    if config.pair_momentum != 0.0:  # mixed with the newest stored pair, if any
        newest = (block.pushed - 1) % capacity
        # take, not pairs[newest, :]: the standard indexes by an array only without slices
        rows = xp.take(block.pairs, xp.stack([newest, capacity + newest]), axis=0)
        s_mixed, y_mixed = mix_with_newest(s, y, rows[0, :], rows[1, :], config.pair_momentum)
        s = xp.where(block.pushed > 0, s_mixed, s)
        y = xp.where(block.pushed > 0, y_mixed, y)
    outcome = prepare_pair(kernels, s, y, config)  # Eq (7)
    formed = boundary & block.has_snapshot  # a pair exists at this boundary
    block = block._replace(
        mu=xp.where(formed, outcome.mu, block.mu),
        tau=xp.where(formed, outcome.tau, block.tau),
        average_stalled=xp.where(formed, stalled, block.average_stalled),
        rejected=block.rejected + xp.astype(formed & ~outcome.accepted, block.rejected.dtype),
    )
    block = push(block, s, outcome.y_hat, formed & outcome.accepted, config, kernels, after)
    block = block._replace(  # the snapshot for the next pair
        snapshot_theta=xp.where(boundary, block.average_theta, block.snapshot_theta),
        snapshot_grad=xp.where(boundary, block.average_grad, block.snapshot_grad),
        has_snapshot=block.has_snapshot | boundary,
    )
    if config.restart_grad_average:
        block = block._replace(average_grad=xp.where(boundary, g, block.average_grad))
    return block


class Compact(NamedTuple):
    """What a push changes besides the pairs: the Gram matrices and the compact form."""

    s_dot_y: Array
    y_dot_y: Array
    middle: Array
    gamma: Array
    pushed: Array


def push(
    block: PureBlock,
    s: Array,
    y_hat: Array,
    taken: Array,
    config: MLBFGSConfig,
    kernels: Kernels,
    after: Array | None = None,
) -> PureBlock:
    """UpdateHessian (``CurvatureHistory.push`` and ``compact_form``) if ``taken``: store
    the pair in the oldest slot (two rows, ``Kernels.write_pair_if``), then, under
    ``Kernels.cond``, the Gram matrices' new row and column and the middle matrix."""
    capacity = config.history_size
    slot = block.pushed % capacity
    pairs = kernels.write_pair_if(taken, block.pairs, slot, s, y_hat, after)
    old = Compact(block.s_dot_y, block.y_dot_y, block.middle, block.gamma, block.pushed)
    new = kernels.cond(
        taken,
        lambda pairs, s, y_hat, old: compact_after_push(pairs, s, y_hat, old, config, kernels),
        lambda pairs, s, y_hat, old: old,
        pairs, s, y_hat, old,
    )  # fmt: skip
    return block._replace(pairs=pairs, **new._asdict())


def compact_after_push(
    pairs: Array, s: Array, y_hat: Array, old: Compact, config: MLBFGSConfig, kernels: Kernels
) -> Compact:
    """The Gram matrices' row and column of the pair just stored (``s`` against the y_hat
    rows, ``y_hat`` against every row, from the rows as stored) and the new compact form."""
    xp, gram, capacity = kernels.xp, kernels.gram_dtype, config.history_size
    slot = old.pushed % capacity
    s_with_y, y_with_all = new_products(kernels, pairs, s, y_hat, gram)
    s_dot_y = set_row(xp, old.s_dot_y, slot, s_with_y)
    s_dot_y = set_row(xp, s_dot_y.T, slot, y_with_all[:capacity]).T
    y_dot_y = set_row(xp, old.y_dot_y, slot, y_with_all[capacity:])
    y_dot_y = set_row(xp, y_dot_y.T, slot, y_with_all[capacity:]).T
    pushed = old.pushed + 1
    count = xp.minimum(pushed, capacity)
    positions = xp.arange(capacity, dtype=pushed.dtype, device=device(pairs))
    slots = (pushed - count + positions) % capacity  # oldest first, the empty ones last
    fixed = fixed_gamma(config)
    gamma = (
        newest_gamma(s_dot_y, y_dot_y, slot) if fixed is None else xp.full_like(old.gamma, fixed)
    )
    middle = middle_matrix(xp, s_dot_y, y_dot_y, slots, gamma, valid=positions < count)
    return Compact(s_dot_y, y_dot_y, middle, gamma, pushed)
