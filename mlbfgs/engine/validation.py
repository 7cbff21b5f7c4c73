"""Input checks that run before the optimizer changes anything.

Every check raises with a message that names the argument (and index), so that a bad
call leaves parameters and optimizer state exactly as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from array_api_compat import array_namespace, device, is_array_api_obj

from ..core.config import is_real
from ..core.types import Array, Namespace
from .aliasing import first_overlap, write_problem

LearningRate = float | Callable[[int], float]


def check_params(params: object) -> tuple[list[Array], Namespace]:
    """A non-empty list of writable floating-point arrays of one namespace that do not
    share memory; returns it and xp."""
    if is_array_api_obj(params) or not isinstance(params, Sequence) or not params:
        raise TypeError("params must be a non-empty list of arrays (not a single array)")
    arrays = list(params)
    first_index: dict[int, int] = {}
    for i, p in enumerate(arrays):
        if not is_array_api_obj(p):
            raise TypeError(f"params[{i}] is a {type(p).__name__}, not an array")
        if id(p) in first_index:  # one of the two updates would be lost
            raise ValueError(f"params[{i}] is the same array as params[{first_index[id(p)]}]")
        first_index[id(p)] = i
    try:
        xp = array_namespace(*arrays)
    except TypeError as error:
        raise TypeError(f"params must all come from one array library: {error}") from None
    for i, p in enumerate(arrays):
        if not xp.isdtype(p.dtype, "real floating"):
            raise TypeError(f"params[{i}] has dtype {p.dtype}; mL-BFGS needs real floating point")
        problem = write_problem(p)
        if problem is not None:  # the step would fail half-way through, when it writes
            raise ValueError(f"params[{i}] {problem}; parameters are updated in place")
    overlap = first_overlap(arrays)
    if overlap is not None:  # one of the two updates of the shared elements would be lost
        i, j = overlap
        raise ValueError(
            f"params[{j}] shares memory with params[{i}] (overlapping views of one buffer); "
            "each parameter must own its elements, or one update overwrites the other"
        )
    return arrays, xp


def check_options(on_nonfinite: object, average_grads: object, sharded: object) -> None:
    """The engine's policy and its two switches (``sharded`` excludes averaging)."""
    if on_nonfinite not in ("skip", "raise"):
        raise ValueError(f"on_nonfinite must be 'skip' or 'raise', got {on_nonfinite!r}")
    if not isinstance(average_grads, bool) or not isinstance(sharded, bool):
        raise TypeError(f"average_grads, sharded must be bools: {average_grads!r}, {sharded!r}")
    if sharded and average_grads:
        raise ValueError("sharded=True needs average_grads=False (shards differ by rank)")


def check_grads(grads: object, params: Sequence[Array], xp: Namespace) -> list[Array]:
    """Gradients that match the parameters in count, kind, shape, dtype and device."""
    if is_array_api_obj(grads) or not isinstance(grads, Sequence):
        raise TypeError("grads must be a list of arrays, one per parameter")
    if len(grads) != len(params):
        raise ValueError(f"grads has {len(grads)} arrays but there are {len(params)} params")
    # This runs every step: the common case (same array type, shape, dtype and device as
    # the parameter) is settled with plain attribute reads; anything else gets the full
    # checks below, which name the culprit.
    if all(
        type(g) is type(p)
        and g.shape == p.shape
        and g.dtype == p.dtype
        and getattr(g, "device", None) == getattr(p, "device", None)
        for g, p in zip(grads, params, strict=True)
    ):
        return list(grads)
    for i, (g, p) in enumerate(zip(grads, params, strict=True)):
        if not is_array_api_obj(g):
            raise TypeError(f"grads[{i}] is a {type(g).__name__}, not an array")
        try:
            array_namespace(g, p)
        except TypeError:
            raise TypeError(
                f"grads[{i}] comes from another array library than params[{i}]"
            ) from None
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"grads[{i}] has shape {tuple(g.shape)}, params[{i}] {tuple(p.shape)}")
        if g.dtype != p.dtype:
            raise TypeError(f"grads[{i}] has dtype {g.dtype}, params[{i}] {p.dtype}")
        if device(g) != device(p):
            raise ValueError(f"grads[{i}] is on {device(g)}, params[{i}] on {device(p)}")
    return list(grads)


def history_storage(xp: Namespace, name: str | None) -> object | None:
    """The dtype ``history_dtype`` names in ``xp`` (``None``: the parameters' own)."""
    if name is None:
        return None
    dtype = getattr(xp, name, None)
    if dtype is None:
        library = getattr(xp, "__name__", repr(xp)).rsplit(".", 1)[-1]
        raise ValueError(
            f"history_dtype={name!r} is not a dtype of {library} (NumPy and CuPy have no "
            "bfloat16: use 'float16', or torch tensors)"
        )
    return dtype


def check_lr(lr: object) -> LearningRate:
    """A finite float >= 0, or a callable ``t -> float`` (checked at every step)."""
    if callable(lr):
        return lr
    if not is_real(lr) or float(lr) < 0:
        raise ValueError(f"lr must be a finite number >= 0 or a callable t -> lr, got {lr!r}")
    return float(lr)


def lr_at(lr: LearningRate, t: int) -> float:
    """The learning rate for step t, checked before the step changes anything."""
    value = lr(t) if callable(lr) else lr
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"lr({t}) returned {value!r}, not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"lr({t}) returned {value!r}; it must be finite and >= 0")
    return value
