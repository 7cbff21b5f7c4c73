"""The pure step's curvature pairs (``core/functional.py``): Eq (6), Eq (7) and the push
into the ring buffer, as selections and one ``Kernels.cond``.

Mirrors ``algorithm.update_curvature``, ``curvature.prepare_pair`` and
``CurvatureHistory.push``; the compact form is the engine's own :func:`middle_matrix`.
"""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import device

from .config import MLBFGSConfig
from .damping import damping_tau_array
from .initial_matrix import bias_correction, root_of_delta
from .kernels import Kernels, set_row
from .preconditioner import middle_matrix
from .pure_state import PureBlock
from .types import Array, Namespace


def delta_root(block: PureBlock, t: Array, config: MLBFGSConfig, xp: Namespace) -> Array:
    """``h0="adam"``'s ``D^{1/2}`` at step t (``algorithm.delta_root``)."""
    correction = bias_correction(config.adam_beta2, t - block.skipped)
    return root_of_delta(xp, block.second_moment, correction, config.adam_eps)


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
    xp, gram = kernels.xp, kernels.gram_dtype
    s = block.average_theta - block.snapshot_theta  # Eq (6)
    y = block.average_grad - block.snapshot_grad
    if config.h0 == "adam":  # the pair where H_0 is the identity: (D^{-1/2} s, D^{1/2} y)
        root = delta_root(block, t, config, xp)
        s, y = s / root, y * root
    capacity = config.history_size
    if config.pair_momentum != 0.0:  # mixed with the newest stored pair, if any
        newest = (block.pushed - 1) % capacity
        m = config.pair_momentum
        s_mixed = s * (1.0 - m) + m * block.pairs[newest, :]
        y_mixed = y * (1.0 - m) + m * block.pairs[capacity + newest, :]
        s = xp.where(block.pushed > 0, s_mixed, s)
        y = xp.where(block.pushed > 0, y_mixed, y)
    s_dot_y, s_dot_s = xp.astype(kernels.dot(s, y), gram), xp.astype(kernels.dot(s, s), gram)
    defined = xp.isfinite(s_dot_y) & xp.isfinite(s_dot_s) & (s_dot_s != 0.0)
    mu = xp.where(defined, s_dot_y / xp.where(defined, s_dot_s, xp.ones_like(s_dot_s)), xp.nan)
    if config.damping:  # Eq (7)
        tau = damping_tau_array(xp, mu, config.tau0, config.sigma_low, config.sigma_high)
        y_hat = xp.astype(tau, y.dtype) * y + xp.astype(1.0 - tau, s.dtype) * s
        curvature = mu * tau + 1.0 - tau
    else:
        tau, y_hat, curvature = xp.ones_like(mu), y, mu
    y_sq = kernels.dot(y_hat, y_hat)
    positive = (
        defined & (curvature > float(xp.finfo(s.dtype).eps)) & xp.isfinite(y_sq) & (y_sq > 0.0)
    )
    formed = boundary & block.has_snapshot  # a pair exists at this boundary
    block = block._replace(
        mu=xp.where(formed, mu, block.mu),
        tau=xp.where(formed, xp.where(defined, tau, xp.nan), block.tau),
        rejected=block.rejected + xp.astype(formed & ~positive, block.rejected.dtype),
    )
    block = push(block, s, y_hat, formed & positive, config, kernels, after)
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
    s_with_y = xp.astype(kernels.project(pairs[capacity:, :], s), gram)
    y_with_all = xp.astype(kernels.project(pairs, y_hat), gram)
    s_dot_y = set_row(xp, old.s_dot_y, slot, s_with_y)
    s_dot_y = set_row(xp, s_dot_y.T, slot, y_with_all[:capacity]).T
    y_dot_y = set_row(xp, old.y_dot_y, slot, y_with_all[capacity:])
    y_dot_y = set_row(xp, y_dot_y.T, slot, y_with_all[capacity:]).T
    pushed = old.pushed + 1
    count = xp.minimum(pushed, capacity)
    positions = xp.arange(capacity, dtype=pushed.dtype, device=device(pairs))
    slots = (pushed - count + positions) % capacity  # oldest first, the empty ones last
    if config.h0 == "adam":
        gamma = xp.ones_like(old.gamma)
    else:
        gamma = s_dot_y[slot, slot] / y_dot_y[slot, slot]
    middle = middle_matrix(xp, s_dot_y, y_dot_y, slots, gamma, valid=positions < count)
    return Compact(s_dot_y, y_dot_y, middle, gamma, pushed)
