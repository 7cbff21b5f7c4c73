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

The mathematics is the core's own: Eq (5) as ``Kernels.lerp_`` computes it, Eq (6)'s
differences, Eq (7) through :func:`damping_tau_array` (the branch-free twin of
``damping_tau``, tested equal), Adam's moments (``initial_matrix.py``), the compact form
(:func:`middle_matrix`, :func:`apply_compact_form`) and step control
(:func:`direction_scales`). ``tests/jax/test_functional.py`` checks the trajectory against
the engine's to 1e-12 in float64. The ring buffer needs no slot list: with ``pushed`` pairs
pushed so far, the next goes to slot ``pushed % M`` and the occupied slots, oldest first,
are ``(pushed - m + i) % M`` for ``m = min(pushed, M)``.

Not here (yet): half-precision parameters or history, and the ``average_stalled`` statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from array_api_compat import device

from .config import MLBFGSConfig
from .damping import damping_tau_array
from .first_order import apply_weight_decay
from .initial_matrix import bias_correction, root_of_delta
from .kernels import Kernels
from .preconditioner import apply_compact_form, middle_matrix
from .step_norm import direction_scales
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


class PureState(NamedTuple):
    """Every block's state and the number of steps taken (an int array)."""

    step: Array
    blocks: tuple[PureBlock, ...]


BlockSum = Callable[[Mapping[int, Array]], Array]
PER_STEP = ("average_theta", "average_grad", "started", "momentum", "second_moment")
"""The fields every step changes; the rest change only at a boundary, under ``cond``."""


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
    if config.averaging == "mean":  # Eq (5)
        theta_avg = lerp(block.average_theta, theta, 1.0 - config.hessian_momentum)
        grad_avg = lerp(block.average_grad, g, 1.0 - config.hessian_momentum)
    else:  # the released sums
        theta_avg = block.average_theta * config.hessian_momentum + theta
        grad_avg = block.average_grad * config.hessian_momentum + g
    block = block._replace(  # line 1: the averages start at theta_1 and g_1
        average_theta=xp.where(block.started, theta_avg, theta),
        average_grad=xp.where(block.started, grad_avg, g),
        started=xp.ones_like(block.started),
    )
    step_input, root = g, None
    if config.h0 == "adam":  # Adam's moments from zero; H acts on D^{1/2} m^
        second = lerp(block.second_moment, g * g, 1.0 - config.adam_beta2)
        first = lerp(block.momentum, g, 1.0 - config.momentum)
        block = block._replace(second_moment=second, momentum=first)
        root = delta_root(block, t, config, xp)
        step_input = root * (first / bias_correction(config.momentum, t - block.skipped))
    if config.pair_timing == "before_step":
        block = form_pair(block, theta, g, t, boundary, config, kernels)
    first_order = g if root is None else root * step_input
    first_order_sq = kernels.dot(first_order, first_order)
    projection = kernels.project(block.pairs, step_input)
    gamma = xp.astype(block.gamma, step_input.dtype)
    d = apply_compact_form(block.pairs, None, block.middle, gamma, step_input, projection, kernels)
    if root is not None:
        d = d * root
    preconditions = (t > config.warmup_steps) & (block.pushed > 0)  # line 7
    return Prepared(block, first_order, first_order_sq, d, preconditions)


def lerp(average: Array, x: Array, weight: float) -> Array:
    """``(1 - weight) * average + weight * x``, rounded as ``Kernels.lerp_`` rounds it."""
    return average * (1.0 - weight) + weight * x


def delta_root(block: PureBlock, t: Array, config: MLBFGSConfig, xp: Namespace) -> Array:
    """``h0="adam"``'s ``D^{1/2}`` at step t (``algorithm.delta_root``)."""
    correction = bias_correction(config.adam_beta2, t - block.skipped)
    return root_of_delta(xp, block.second_moment, correction, config.adam_eps)


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
        direction = block.momentum * config.momentum + direction
        block = block._replace(momentum=direction)
    rate = lr if isinstance(lr, float) else xp.astype(lr, theta.dtype)
    update = -(rate * direction)  # line 11, Eq (2): theta + update == theta - lr d exactly
    if config.pair_timing == "after_step":  # line 13
        block = form_pair(block, theta, g, t, boundary, config, kernels)
    return update, block


def form_pair(
    block: PureBlock,
    theta: Array,
    g: Array,
    t: Array,
    boundary: Array,
    config: MLBFGSConfig,
    kernels: Kernels,
) -> PureBlock:
    """Lines 14-17 (``algorithm.update_curvature``) at a boundary of a block whose gradient
    is finite (``boundary``), else the block as it is: the pair of Eq (6), damped by Eq (7)
    and pushed if it has positive curvature; then the snapshot.

    The O(n) pieces run every step and are selected; the O(Mn) products with the history
    run only when a pair is pushed (:func:`push`).
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
    block = push(block, s, y_hat, formed & positive, config, kernels)
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
) -> PureBlock:
    """UpdateHessian (``CurvatureHistory.push`` and ``compact_form``) if ``taken``: store
    the pair in the oldest slot (one row each, ``Kernels.write_row_if``), then, under
    ``Kernels.cond``, the Gram matrices' new row and column and the middle matrix."""
    capacity = config.history_size
    slot = block.pushed % capacity
    pairs = kernels.write_row_if(taken, block.pairs, slot, s)
    pairs = kernels.write_row_if(taken, pairs, capacity + slot, y_hat)
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


def set_row(xp: Namespace, matrix: Array, row: Array, vector: Array) -> Array:
    """A new small ``matrix`` with row ``row`` replaced by ``vector``."""
    rows = xp.arange(int(matrix.shape[0]), dtype=row.dtype, device=device(matrix))
    return xp.where((rows == row)[:, None], vector[None, :], matrix)
