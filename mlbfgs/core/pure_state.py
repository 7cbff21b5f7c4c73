"""The pure step's state (``core/functional.py``): fixed-shape arrays, a pytree for JAX.

A block's state holds what the engine's ``BlockState`` holds (``core/algorithm.py``), with
every optional part present from the start (zeros, and flags saying what has started), so
that a traced program sees the same shapes at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from array_api_compat import device

from .config import MLBFGSConfig
from .types import Array, Namespace


class PureBlock(NamedTuple):
    """One curvature block's state: arrays of fixed shapes (n elements, M pairs)."""

    average_theta: Array
    """M_theta of Eq (5)."""
    average_grad: Array
    """M_g of Eq (5)."""
    snapshot_theta: Array
    """M_theta at the last curvature boundary, for Eq (6)."""
    snapshot_grad: Array
    started: Array
    """Whether the averages have started (Algorithm 1, line 1): bool."""
    has_snapshot: Array
    momentum: Array
    """The heavy-ball buffer, or Adam's first moment m with ``h0="adam"`` (zeros at first)."""
    second_moment: Array
    """Adam's v with ``h0="adam"``; empty otherwise."""
    pairs: Array
    """``(2M, n)``: s in rows ``[0, M)``, y_hat in rows ``[M, 2M)``, by slot."""
    s_dot_y: Array
    """``(M, M)``: ``s_i^T y_hat_j`` by slot."""
    y_dot_y: Array
    middle: Array
    """``(2M, 2M)``: the compact form's middle matrix, by slot."""
    gamma: Array
    """``H_0 = gamma I``."""
    pushed: Array
    """Pairs pushed so far (int)."""
    rejected: Array
    """Pairs formed but not pushed (int)."""
    skipped: Array
    """Steps skipped for a non-finite gradient (int)."""
    mu: Array
    """``s^T y / s^T s`` of the newest pair formed (NaN before)."""
    tau: Array
    """Eq (7)'s tau of the newest pair formed (NaN before)."""
    average_stalled: Array
    """``averages.stalled_share`` when the newest pair was formed (NaN before)."""


class PureState(NamedTuple):
    """Every block's state and the number of steps taken (an int array)."""

    step: Array
    blocks: tuple[PureBlock, ...]


def init_block(
    xp: Namespace, n: int, config: MLBFGSConfig, dtype: object, gram: object, on: object
) -> PureBlock:
    """The state of a block of ``n`` elements before its first step (every field its own
    array, so that a caller may donate the state's buffers)."""
    capacity = config.history_size

    def zeros(shape: tuple[int, ...], of: object = dtype) -> Array:
        return xp.zeros(shape, dtype=of, device=on)

    def scalar(value: object, of: object) -> Array:
        return xp.asarray(value, dtype=of, device=on)

    adam = config.h0 == "adam"
    return PureBlock(
        average_theta=zeros((n,)),
        average_grad=zeros((n,)),
        snapshot_theta=zeros((n,)),
        snapshot_grad=zeros((n,)),
        started=scalar(False, xp.bool),
        has_snapshot=scalar(False, xp.bool),
        momentum=zeros((n,)),
        second_moment=zeros((n if adam else 0,)),
        pairs=zeros((2 * capacity, n)),
        s_dot_y=zeros((capacity, capacity), gram),
        y_dot_y=zeros((capacity, capacity), gram),
        middle=zeros((2 * capacity, 2 * capacity), gram),
        gamma=scalar(1.0, gram),
        pushed=scalar(0, xp.int32),
        rejected=scalar(0, xp.int32),
        skipped=scalar(0, xp.int32),
        mu=scalar(float("nan"), gram),
        tau=scalar(float("nan"), gram),
        average_stalled=scalar(float("nan"), gram),
    )


def init(
    xp: Namespace,
    thetas: Sequence[Array],
    config: MLBFGSConfig,
    gram: object,
    on: object = "like thetas",
) -> PureState:
    """The state before step 1 for blocks whose flat parameter vectors are ``thetas``, on
    ``thetas``' device or ``on`` (``None``: the library's default placement)."""
    on = device(thetas[0]) if on == "like thetas" else on
    blocks = tuple(
        init_block(xp, int(theta.shape[0]), config, theta.dtype, gram, on) for theta in thetas
    )
    return PureState(xp.asarray(0, dtype=xp.int32, device=on), blocks)
