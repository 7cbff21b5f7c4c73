"""Flat, pickle-free encoding of the optimizer's state, and its checks on the way back in.

A state dict maps ``str`` keys to arrays and plain scalars only, so it saves with
``numpy.savez(path, **state, allow_pickle=False)`` (or ``torch.save``). Optional parts
(averages before the first step, the snapshot before the first boundary, the heavy-ball
buffer) are simply absent. Everything derivable (the compact form, gamma) is rebuilt on
load with the same operations that built it, so a resumed run is bitwise the run that
never stopped.

Decoding checks values as well as shapes, because a state that loads is trusted from
then on: every array must be finite (one NaN in the history would skip its block for
good, one in a Gram matrix or the heavy-ball buffer would reach the parameters), the
counters must be integers, the slot order must be one the ring buffer can continue, and
every stored pair must have positive curvature. Errors name the key. The engine's
``state_dict`` / ``load_state_dict`` use it, and through them ``mlbfgs.checkpoint``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from array_api_compat import array_namespace, device, is_array_api_obj

from ..core.algorithm import BlockState, BlockStats
from ..core.averages import MomentumAverages
from ..core.config import is_count
from ..core.history import CurvatureHistory
from ..core.preconditioner import compact_form
from ..core.types import Array, Namespace

FORMAT_VERSION = 1
"""Version of the key names and layout of a state dict (the first released, 0.1.0). A
future change of either bumps it; a state of another version is then refused with a
message naming both versions (``loading.read_state``), never read by guesswork."""

VECTORS = (  # a block's n-vectors, each optional
    "averages.theta",
    "averages.grad",
    "averages.snapshot_theta",
    "averages.snapshot_grad",
    "momentum_buffer",
    "second_moment",
)
_COUNTERS = ("pairs_pushed", "pairs_rejected", "skipped_steps")


def encode_block(
    xp: Namespace, prefix: str, block: BlockState, copy: bool = True
) -> dict[str, Any]:
    """The block's state as ``{prefix + key: array or scalar}`` (arrays are copies, or
    the block's own arrays with ``copy=False``)."""
    averages = block.averages
    vectors = {
        "averages.theta": averages.theta if averages else None,
        "averages.grad": averages.grad if averages else None,
        "averages.snapshot_theta": averages.snapshot_theta if averages else None,
        "averages.snapshot_grad": averages.snapshot_grad if averages else None,
        "momentum_buffer": block.momentum_buffer,
        "second_moment": block.second_moment,
    }
    history = block.history
    state: dict[str, Any] = {
        prefix + key: xp.asarray(value, copy=copy)
        for key, value in vectors.items()
        if value is not None
    }
    state[prefix + "history.pairs"] = xp.asarray(history.pairs, copy=copy)
    state[prefix + "history.s_dot_y"] = xp.asarray(history.s_dot_y, copy=copy)
    state[prefix + "history.y_dot_y"] = xp.asarray(history.y_dot_y, copy=copy)
    if history.scales is not None:
        state[prefix + "history.scales"] = xp.asarray(history.scales, copy=copy)
    state[prefix + "history.order"] = [int(slot) for slot in history.order]
    for name in _COUNTERS:
        state[prefix + "stats." + name] = int(getattr(block.stats, name))
    state[prefix + "stats.mu"] = float(block.stats.mu)
    state[prefix + "stats.tau"] = float(block.stats.tau)
    state[prefix + "stats.average_stalled"] = float(block.stats.average_stalled)
    return state


def decode_block(
    xp: Namespace,
    prefix: str,
    state: Mapping[str, Any],
    template: BlockState,
    vector_dtype: object,
    second_moment: bool = False,
) -> BlockState:
    """Rebuild a block from ``state``, checking every value against ``template``.

    ``second_moment``: whether the optimizer keeps ``h0="adam"``'s v, which every block
    that took a step then has (and no other block may: its pairs are scaled by v).

    ``template`` is a fresh block of the same layout and ``vector_dtype`` the dtype of its
    state (``core.kernels.state_dtype`` of its parameters' dtype); nothing of it is
    modified. History pairs may arrive widened (a ``.npz`` file holds bfloat16 as float32,
    torch's ``load_state_dict`` casts to the parameters' dtype): they are narrowed back if
    every value is exact in the history's dtype.
    """
    like = template.history.pairs
    n = int(like.shape[1])

    def array(key: str, shape: tuple[int, ...], dtype: object, widened: bool = False) -> Array:
        value = state[prefix + key]
        if not is_array_api_obj(value):
            raise TypeError(f"state[{prefix + key!r}] is a {type(value).__name__}, not an array")
        result = xp.asarray(value, device=device(like), copy=True)
        wider = widened and _wider(xp, result.dtype, dtype)
        if tuple(result.shape) != shape or (result.dtype != dtype and not wider):
            raise ValueError(
                f"state[{prefix + key!r}] has shape {tuple(result.shape)} and dtype "
                f"{result.dtype}; expected {shape} and {dtype}"
            )
        if not bool(xp.all(xp.isfinite(result))):
            raise ValueError(f"state[{prefix + key!r}] holds NaN or infinity")
        if result.dtype != dtype:
            narrowed = xp.astype(result, dtype)
            if not bool(xp.all(xp.astype(narrowed, result.dtype) == result)):
                raise ValueError(
                    f"state[{prefix + key!r}] has dtype {result.dtype} and values that {dtype}, "
                    "the history's dtype, cannot hold exactly: was it saved with another "
                    "history_dtype?"
                )
            result = narrowed
        return result

    present = {key: prefix + key in state for key in VECTORS}
    if present["averages.theta"] != present["averages.grad"] or (
        present["averages.snapshot_theta"] != present["averages.snapshot_grad"]
    ):
        raise ValueError(f"state for {prefix!r} has one of a pair of averages but not the other")
    if present["second_moment"] != (second_moment and present["averages.theta"]):
        raise ValueError(
            f"state for {prefix!r} {'has' if present['second_moment'] else 'lacks'} "
            f"second_moment: it was saved with another h0 than this optimizer's "
            f"({'adam' if second_moment else 'gamma'})"
        )
    vectors = {key: array(key, (n,), vector_dtype) if present[key] else None for key in VECTORS}
    if vectors["second_moment"] is not None and bool(xp.any(vectors["second_moment"] < 0)):
        raise ValueError(f"state[{prefix + 'second_moment'!r}] holds a negative value")
    averages = None
    if vectors["averages.theta"] is not None and vectors["averages.grad"] is not None:
        averages = MomentumAverages(
            vectors["averages.theta"],
            vectors["averages.grad"],
            vectors["averages.snapshot_theta"],
            vectors["averages.snapshot_grad"],
        )

    capacity = template.history.capacity
    square = (capacity, capacity)
    key = prefix + "history.order"
    order = as_ints(state[key], key)
    # The ring buffer fills slots 0, 1, ... before it overwrites the oldest, so the
    # occupied slots are always 0..m-1 (in any order once it wrapped around).
    if len(order) > capacity or sorted(order) != list(range(len(order))):
        raise ValueError(
            f"state[{key!r}] is not a valid slot order: {order} (slots 0..m-1 with m <= "
            f"{capacity}, each once, oldest pair first)"
        )
    stats = BlockStats(
        **{name: count(state, prefix + "stats." + name) for name in _COUNTERS},
        mu=real(state, prefix + "stats.mu"),
        tau=real(state, prefix + "stats.tau"),
        average_stalled=real(state, prefix + "stats.average_stalled"),
    )
    if stats.pairs_pushed < len(order):
        raise ValueError(
            f"state[{prefix + 'stats.pairs_pushed'!r}] is {stats.pairs_pushed}, fewer than the "
            f"{len(order)} pairs stored"
        )
    scales = template.history.scales  # a half-precision history has its rows' scales
    if (scales is None) == (prefix + "history.scales" in state):
        raise ValueError(
            f"state[{prefix + 'history.scales'!r}] is "
            f"{'present' if scales is None else 'missing'}: the state's history was stored "
            f"with another history_dtype than this optimizer's ({like.dtype})"
        )
    if scales is not None:
        scales = _scales(xp, array, prefix, 2 * capacity)
    history = CurvatureHistory(
        pairs=array("history.pairs", (2 * capacity, n), like.dtype, widened=True),
        s_dot_y=array("history.s_dot_y", square, xp.float64),
        y_dot_y=array("history.y_dot_y", square, xp.float64),
        order=order,
        scales=None if scales is None else xp.asarray(scales, copy=True),
    )
    for name in ("s_dot_y", "y_dot_y"):
        gram = getattr(history, name)
        bad = [slot for slot in order if not float(gram[slot, slot]) > 0.0]
        if bad:
            raise ValueError(
                f"state[{prefix + 'history.' + name!r}] has a diagonal entry <= 0 for the "
                f"stored pair(s) in slot(s) {bad}; every stored pair has positive curvature"
            )
    return BlockState(
        history=history,
        averages=averages,
        momentum_buffer=vectors["momentum_buffer"],
        second_moment=vectors["second_moment"],
        form=_form(xp, history, prefix, 1.0 if second_moment else None) if order else None,
        stats=stats,
    )


def _wider(xp: Namespace, given: object, expected: object) -> bool:
    """Whether ``given`` is a floating dtype with more bits than ``expected``."""
    return bool(xp.isdtype(given, "real floating")) and (
        int(xp.finfo(given).bits) > int(xp.finfo(expected).bits)
    )


def _scales(xp: Namespace, array: Callable[..., Array], prefix: str, rows: int) -> Array:
    """The rows' scales of a half-precision history: positive powers of two."""
    scales = array("history.scales", (rows,), xp.float64)
    if any(math.frexp(float(scales[r]))[0] != 0.5 for r in range(rows)):
        raise ValueError(f"state[{prefix + 'history.scales'!r}] must hold powers of two > 0")
    return scales


def _form(xp: Namespace, history: CurvatureHistory, prefix: str, gamma: float | None) -> Any:
    """The compact form of a loaded history, which must come out finite."""
    try:
        form = compact_form(xp, history, gamma)
        finite = math.isfinite(form.gamma) and bool(xp.all(xp.isfinite(form.middle)))
    except Exception as error:  # LinAlgError (NumPy: ValueError, torch: RuntimeError)
        raise ValueError(f"state[{prefix + 'history.s_dot_y'!r}] is singular: {error}") from None
    if not finite:
        raise ValueError(
            f"state[{prefix + 'history.s_dot_y'!r}] and [{prefix + 'history.y_dot_y'!r}] give "
            "a non-finite preconditioner"
        )
    return form


def saved_partition(state: Mapping[str, Any]) -> list[list[tuple[int, int, int]]]:
    """The blocks a state was saved with, as pieces ``(index, start, stop)``:
    ``partition.pieces`` (three ints a piece) split by ``partition.sizes`` (pieces a block)."""
    sizes = as_ints(state["partition.sizes"], "partition.sizes")
    flat = as_ints(state["partition.pieces"], "partition.pieces")
    pieces = [(flat[k], flat[k + 1], flat[k + 2]) for k in range(0, len(flat) - 2, 3)]
    if len(flat) % 3:
        raise ValueError("state['partition.pieces'] must hold three integers a piece")
    if any(n < 1 for n in sizes) or sum(sizes) != len(pieces):
        raise ValueError(
            f"state['partition.sizes'] is {sizes}, which does not split the "
            f"{len(pieces)} pieces of state's partition"
        )
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [pieces[a : a + n] for a, n in zip(starts, sizes, strict=True)]


def integer(value: Any, key: str) -> int:
    """``value`` as an int: a Python or NumPy integer, or a 0-d integer array."""
    if is_count(value):
        return int(value)
    if is_array_api_obj(value) and value.ndim == 0 and _integral(value):
        return int(value)
    kind = type(value).__name__
    if isinstance(value, str) or not (is_array_api_obj(value) or isinstance(value, float)):
        raise TypeError(f"state[{key!r}] must be an integer, got a {kind}: {value!r}")
    raise ValueError(f"state[{key!r}] must be an integer, got {value!r}")


def count(state: Mapping[str, Any], key: str) -> int:
    """``state[key]`` as an int >= 0."""
    value = integer(state[key], key)
    if value < 0:
        raise ValueError(f"state[{key!r}] must be >= 0, got {value}")
    return value


def real(state: Mapping[str, Any], key: str) -> float:
    """``state[key]`` as a float (NaN allowed: a statistic not measured yet)."""
    value = state[key]
    if is_array_api_obj(value) and value.ndim == 0:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"state[{key!r}] must be a number, got a {type(value).__name__}")
    return float(value)


def as_ints(value: Any, key: str) -> list[int]:
    """Ints from a scalar, a list, or a 1-d array (``numpy.load`` turns lists into arrays)."""
    if is_array_api_obj(value) and value.ndim == 1:
        if not _integral(value) and int(value.shape[0]) > 0:
            raise ValueError(f"state[{key!r}] must hold integers, got dtype {value.dtype}")
        return [int(value[i]) for i in range(int(value.shape[0]))]
    if isinstance(value, (list, tuple)):
        return [integer(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return [integer(value, key)]


def _integral(array: Array) -> bool:
    return bool(array_namespace(array).isdtype(array.dtype, "integral"))
