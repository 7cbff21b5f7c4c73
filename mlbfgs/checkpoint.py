"""Flat, pickle-free encoding of a block's state for ``state_dict`` / ``load_state_dict``.

A state dict maps ``str`` keys to arrays and plain scalars only, so it saves with
``numpy.savez(path, **state, allow_pickle=False)``. Optional parts (averages before the
first step, the snapshot before the first boundary, the heavy-ball buffer) are simply
absent. Everything derivable (the compact form, gamma) is rebuilt on load with the same
operations that built it, so a resumed run is bitwise the run that never stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from array_api_compat import device, is_array_api_obj

from .core.algorithm import BlockState, BlockStats
from .core.averages import MomentumAverages
from .core.history import CurvatureHistory
from .core.preconditioner import compact_form
from .core.types import Array, Namespace

_ARRAYS = (
    "averages.theta",
    "averages.grad",
    "averages.snapshot_theta",
    "averages.snapshot_grad",
    "momentum_buffer",
)
_COUNTERS = ("pairs_pushed", "pairs_rejected", "skipped_steps")


def encode_block(xp: Namespace, prefix: str, block: BlockState) -> dict[str, Any]:
    """The block's state as ``{prefix + key: array or scalar}`` (arrays are copies)."""
    averages = block.averages
    vectors = {
        "averages.theta": averages.theta if averages else None,
        "averages.grad": averages.grad if averages else None,
        "averages.snapshot_theta": averages.snapshot_theta if averages else None,
        "averages.snapshot_grad": averages.snapshot_grad if averages else None,
        "momentum_buffer": block.momentum_buffer,
    }
    history = block.history
    state: dict[str, Any] = {
        prefix + key: xp.asarray(value, copy=True)
        for key, value in vectors.items()
        if value is not None
    }
    state[prefix + "history.pairs"] = xp.asarray(history.pairs, copy=True)
    state[prefix + "history.s_dot_y"] = xp.asarray(history.s_dot_y, copy=True)
    state[prefix + "history.y_dot_y"] = xp.asarray(history.y_dot_y, copy=True)
    state[prefix + "history.order"] = [int(slot) for slot in history.order]
    for name in _COUNTERS:
        state[prefix + "stats." + name] = int(getattr(block.stats, name))
    state[prefix + "stats.mu"] = float(block.stats.mu)
    state[prefix + "stats.tau"] = float(block.stats.tau)
    return state


def decode_block(
    xp: Namespace, prefix: str, state: Mapping[str, Any], template: BlockState
) -> BlockState:
    """Rebuild a block from ``state``, checking every array against ``template``.

    ``template`` is a fresh block of the same layout; nothing of it is modified.
    """
    like = template.history.pairs
    n = int(like.shape[1])

    def array(key: str, shape: tuple[int, ...], dtype: object) -> Array:
        value = state[prefix + key]
        if not is_array_api_obj(value):
            raise TypeError(f"state[{prefix + key!r}] is a {type(value).__name__}, not an array")
        result = xp.asarray(value, device=device(like), copy=True)
        if tuple(result.shape) != shape or result.dtype != dtype:
            raise ValueError(
                f"state[{prefix + key!r}] has shape {tuple(result.shape)} and dtype "
                f"{result.dtype}; expected {shape} and {dtype}"
            )
        return result

    present = {key: prefix + key in state for key in _ARRAYS}
    vectors = {key: array(key, (n,), like.dtype) if present[key] else None for key in _ARRAYS}
    averages = None
    if vectors["averages.theta"] is not None and vectors["averages.grad"] is not None:
        averages = MomentumAverages(
            vectors["averages.theta"],
            vectors["averages.grad"],
            vectors["averages.snapshot_theta"],
            vectors["averages.snapshot_grad"],
        )
    if present["averages.theta"] != present["averages.grad"] or (
        present["averages.snapshot_theta"] != present["averages.snapshot_grad"]
    ):
        raise ValueError(f"state for {prefix!r} has one of a pair of averages but not the other")

    capacity = template.history.capacity
    square = (capacity, capacity)
    order = as_ints(state[prefix + "history.order"])
    if (
        len(order) > capacity
        or len(set(order)) != len(order)
        or any(not 0 <= slot < capacity for slot in order)
    ):
        raise ValueError(f"state[{prefix + 'history.order'!r}] is not a valid slot order: {order}")
    history = CurvatureHistory(
        pairs=array("history.pairs", (2 * capacity, n), like.dtype),
        s_dot_y=array("history.s_dot_y", square, xp.float64),
        y_dot_y=array("history.y_dot_y", square, xp.float64),
        order=order,
    )
    stats = BlockStats(
        **{name: int(state[prefix + "stats." + name]) for name in _COUNTERS},
        mu=float(state[prefix + "stats.mu"]),
        tau=float(state[prefix + "stats.tau"]),
    )
    return BlockState(
        history=history,
        averages=averages,
        momentum_buffer=vectors["momentum_buffer"],
        form=compact_form(xp, history) if order else None,
        stats=stats,
    )


def as_ints(value: Any) -> list[int]:
    """Ints from a scalar, a list, or an array (``numpy.load`` turns lists into arrays)."""
    if is_array_api_obj(value):
        if value.ndim == 0:
            return [int(value)]
        return [int(value[i]) for i in range(int(value.shape[0]))]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]
