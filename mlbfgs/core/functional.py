"""Algorithm 1 as pure functions: state in, new state out, for immutable arrays and ``jit``.

The engine (``mlbfgs.engine``) keeps each block's state in mutable objects and branches in
Python on what a step finds: whether the averages exist, whether a pair was accepted,
whether the block is still warming up. A tracing compiler (``jax.jit``) sees none of those
values, and an immutable library cannot write a row. Here the state is a tuple of arrays of
fixed shapes (:class:`PureBlock`) and every decision that depends on data is a ``where``
(both sides computed, one selected: warm-up, a skipped block, the O(n) pieces of a
curvature pair) or a ``Kernels.cond`` (the O(Mn) products of a push with the history: a
Python ``if`` on NumPy, ``jax.lax.cond`` under a trace), so the same function runs eagerly
on NumPy and traced on JAX. Only the configuration (static) is branched on in Python.

The mathematics is the core's own, the functions the engine calls: Eq (5)
(``update_averages``), Eq (6) and (7) with the pair's acceptance (``curvature.py``,
``damping.py``), Adam's moments (``initial_matrix.py``), the push's Gram products, the
compact form (:func:`middle_matrix`, :func:`apply_compact_form`) and step control
(:func:`direction_scales`); ``tests/core/test_two_shapes.py`` checks that both shapes call
the same ones, and ``tests/jax/test_functional.py`` the trajectory against the engine's in
float64. The ring buffer needs no slot list: with ``pushed`` pairs pushed so far, the next
goes to slot ``pushed % M`` and the occupied slots, oldest first, are
``(pushed - m + i) % M`` for ``m = min(pushed, M)``.

The state is in ``pure_state.py``, the pairs (Eq (6), (7), the push) in ``pure_pairs.py``.
Not here: a half-precision history (scaled rows); half-precision parameters come as
float32 vectors (``mlbfgs/jax/blocks.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from .averages import update_averages
from .config import MLBFGSConfig
from .first_order import apply_weight_decay, heavy_ball, in_warmup
from .initial_matrix import scaled_input, update_moment
from .kernels import Kernels
from .preconditioner import apply_compact_form
from .pure_pairs import form_pair
from .pure_state import PureBlock, PureState, init, init_block
from .step_norm import direction_scales
from .types import Array

__all__ = ["PureBlock", "PureState", "init", "init_block", "step"]

PER_STEP = ("average_theta", "average_grad", "started", "momentum", "second_moment")
"""The fields every step changes; the rest change only at a boundary (``form_pair``)."""


def step(
    state: PureState,
    thetas: Sequence[Array],
    grads: Sequence[Array],
    lr: float | Array,
    config: MLBFGSConfig,
    kernels: Kernels,
    across: Callable[[Array], Array] | None = None,
) -> tuple[list[Array], PureState]:
    """Algorithm 1, lines 5-18, for every block: ``(update per block, new state)``, with
    ``theta_{t+1} = theta_t + update`` exactly (the update is ``-(lr * d)``).

    A block whose gradient (weight decay included) is not finite gets a zero update, keeps
    its state and counts the step as skipped, as the engine's ``on_nonfinite="skip"``.
    ``across`` sums a value over the devices that hold the other blocks (``step_norm="unit"``
    in ``mlbfgs/jax/sharded.py``); ``None``: these are all the blocks.
    """
    xp, t = kernels.xp, state.step + 1
    grads = [
        apply_weight_decay(g, theta, config.weight_decay)
        for g, theta in zip(grads, thetas, strict=True)
    ]
    finite = [xp.isfinite(kernels.dot(g, g)) for g in grads]
    boundary = t % config.update_every == 0  # line 13
    prepared = [
        block_direction(block, theta, g, t, boundary & ok, config, kernels)
        for block, theta, g, ok in zip(state.blocks, thetas, grads, finite, strict=True)
    ]
    using = [p.preconditions & ok for p, ok in zip(prepared, finite, strict=True)]

    def sum_over_blocks(values: Mapping[int, Array]) -> Array:  # only blocks that precondition
        zero = xp.zeros((), dtype=kernels.gram_dtype)
        terms = [
            xp.where(using[b], xp.astype(v, kernels.gram_dtype), zero) for b, v in values.items()
        ]
        total = xp.sum(xp.stack(terms))
        return total if across is None else across(total)

    scales = direction_scales(  # step control (design §3.7)
        config.step_norm,
        list(range(len(prepared))),
        [p.first_order_sq for p in prepared],
        [p.preconditioned for p in prepared],
        kernels,
        sum_over_blocks,
    )
    updates, blocks = [], []
    for old, p, theta, g, scale, ok in zip(
        state.blocks, prepared, thetas, grads, scales, finite, strict=True
    ):
        update, block = block_update(p, theta, g, scale, t, boundary & ok, lr, config, kernels)
        # Skipped: nothing changes but the counter (the boundary's work did not run), and a
        # boundary drops the snapshot, so that no pair spans more than T steps
        # (``algorithm.skip_step``).
        kept = {name: xp.where(ok, getattr(block, name), getattr(old, name)) for name in PER_STEP}
        block = block._replace(
            **kept,
            skipped=xp.where(ok, old.skipped, old.skipped + 1),
            has_snapshot=xp.where(ok, block.has_snapshot, old.has_snapshot & ~boundary),
        )
        updates.append(xp.where(ok, update, xp.zeros_like(update)))
        blocks.append(block)
    return updates, PureState(t, tuple(blocks))


class Prepared(NamedTuple):
    """One block's state and direction after lines 5-10."""

    block: PureBlock
    first_order: Array
    """``H_0 g`` without the pairs: g, or Adam's ``D m^``."""
    first_order_sq: Array
    preconditioned: Array
    """``H g``, computed in warm-up too (then not used)."""
    preconditions: Array
    """Whether the step uses it (bool)."""


def block_direction(
    block: PureBlock,
    theta: Array,
    g: Array,
    t: Array,
    boundary: Array,
    config: MLBFGSConfig,
    kernels: Kernels,
) -> Prepared:
    """Lines 5-10 (``algorithm.block_direction``): Eq (5), the pair formed before the step
    with ``pair_timing="before_step"``, and ``H g``."""
    xp = kernels.xp
    theta_avg, grad_avg = update_averages(  # Eq (5)
        kernels,
        (block.average_theta, block.average_grad),
        (theta, g),
        config.hessian_momentum,
        config.averaging,
        in_place=False,
    )
    block = block._replace(  # line 1: the averages start at theta_1 and g_1
        average_theta=xp.where(block.started, theta_avg, theta),
        average_grad=xp.where(block.started, grad_avg, g),
        started=xp.ones_like(block.started),
    )
    step_input, root = g, None
    if config.h0 == "adam":  # Adam's moments from zero; H acts on D^{1/2} m^
        second = update_moment(
            block.second_moment, g * g, config.adam_beta2, kernels, in_place=False
        )
        first = update_moment(block.momentum, g, config.momentum, kernels, in_place=False)
        block = block._replace(second_moment=second, momentum=first)
        root, step_input = scaled_input(xp, first, second, t - block.skipped, config)
    if config.pair_timing == "before_step":
        block = form_pair(block, theta, g, t, boundary, config, kernels)
    first_order = g if root is None else root * step_input
    first_order_sq = kernels.dot(first_order, first_order)
    projection = kernels.project(block.pairs, step_input)
    gamma = xp.astype(block.gamma, step_input.dtype)
    d = apply_compact_form(block.pairs, None, block.middle, gamma, step_input, projection, kernels)
    if root is not None:
        d = d * root
    preconditions = ~in_warmup(t, config.warmup_steps, block.pushed)  # line 7
    return Prepared(block, first_order, first_order_sq, d, preconditions)


def block_update(
    p: Prepared,
    theta: Array,
    g: Array,
    scale: Array | None,
    t: Array,
    boundary: Array,
    lr: float | Array,
    config: MLBFGSConfig,
    kernels: Kernels,
) -> tuple[Array, PureBlock]:
    """Lines 11-17 (``algorithm.block_update``): heavy ball, the update ``-lr d`` of Eq (2),
    and the pair formed after the step."""
    xp, block = kernels.xp, p.block
    d = p.preconditioned if scale is None else p.preconditioned * scale
    direction = xp.where(p.preconditions, d, p.first_order)
    if config.h0 != "adam" and config.momentum != 0.0:  # heavy ball, from a zero buffer
        direction = heavy_ball(block.momentum, direction, config.momentum, kernels, in_place=False)
        block = block._replace(momentum=direction)
    rate = lr if isinstance(lr, float) else xp.astype(lr, theta.dtype)
    update = -(rate * direction)  # line 11, Eq (2): theta + update == theta - lr d exactly
    if config.pair_timing == "after_step":  # line 13, after this step's H g read the history
        block = form_pair(block, theta, g, t, boundary, config, kernels, p.preconditioned)
    return update, block
