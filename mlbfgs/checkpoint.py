"""Flat, pickle-free encoding of a block's state for ``state_dict`` / ``load_state_dict``.

On several ranks each rank's ``state_dict`` holds only the blocks it owns;
:func:`save_sharded` writes one file per rank (no rank gathers the whole history) and
:func:`load_sharded` reads such a directory on any number of ranks, each rank reading only
the blocks it is assigned.

A state dict maps ``str`` keys to arrays and plain scalars only, so it saves with
``numpy.savez(path, **state, allow_pickle=False)``. Optional parts (averages before the
first step, the snapshot before the first boundary, the heavy-ball buffer) are simply
absent. Everything derivable (the compact form, gamma) is rebuilt on load with the same
operations that built it, so a resumed run is bitwise the run that never stopped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import device, is_array_api_obj

from .core.algorithm import BlockState, BlockStats
from .core.averages import MomentumAverages
from .core.history import CurvatureHistory
from .core.preconditioner import compact_form
from .core.types import Array, Namespace

if TYPE_CHECKING:
    from .optimizer import MLBFGS

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


_SHARD = re.compile(r"^mlbfgs-rank(\d+)-of-(\d+)\.npz$")


def _to_numpy(value: Any) -> Any:
    """A host NumPy copy of an array of any library (plain scalars and lists unchanged)."""
    if not is_array_api_obj(value):
        return value
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "get") and not isinstance(value, np.ndarray):  # CuPy
        return value.get()
    return np.asarray(value)


def save_sharded(optimizer: MLBFGS, directory: str | os.PathLike[str]) -> Path:
    """Every rank writes its own blocks to ``directory/mlbfgs-rank<r>-of-<p>.npz``.

    Call on every rank; returns once every rank's file is written. Files of an earlier
    save with another world size are removed (by rank 0), so a directory holds one
    checkpoint. Each file is written under a temporary name and renamed into place.
    """
    comm = optimizer.comm
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"mlbfgs-rank{comm.rank:05d}-of-{comm.size:05d}.npz"
    state = {key: _to_numpy(value) for key, value in optimizer.state_dict().items()}
    state["owned_blocks"] = np.asarray(state["owned_blocks"], dtype=np.int64)
    partial = folder / (name + ".partial")
    with open(partial, "wb") as stream:
        np.savez(stream, **state)
    os.replace(partial, folder / name)
    if comm.rank == 0:
        for path in folder.iterdir():
            match = _SHARD.match(path.name)
            if match and int(match.group(2)) != comm.size:
                path.unlink()
    comm.allgather_object(None)  # a barrier: every file exists when save_sharded returns
    return folder


class ShardedState(Mapping[str, Any]):
    """The union of per-rank state files, read lazily: a key is read when looked up."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        folder = Path(directory)
        shards = sorted(
            (int(m.group(1)), int(m.group(2)), path)
            for path in (folder.iterdir() if folder.is_dir() else [])
            if (m := _SHARD.match(path.name))
        )
        sizes = {size for _, size, _ in shards}
        if not shards or len(sizes) != 1 or [r for r, *_ in shards] != list(range(sizes.pop())):
            found = [path.name for *_, path in shards]
            raise FileNotFoundError(
                f"{folder} does not hold one complete set of per-rank files "
                f"mlbfgs-rank<r>-of-<p>.npz written by save_sharded (found {found})"
            )
        self._files = [np.load(path, allow_pickle=False) for *_, path in shards]
        self._where: dict[str, int] = {}
        for index, file in enumerate(self._files):
            for key in file.files:
                self._where.setdefault(key, index)
        steps = {int(file["step"]) for file in self._files}
        if len(steps) != 1:
            raise ValueError(f"the per-rank files in {folder} are from different steps {steps}")

    def __getitem__(self, key: str) -> Any:
        return self._files[self._where[key]][key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for file in self._files:
            file.close()


def load_sharded(optimizer: MLBFGS, directory: str | os.PathLike[str]) -> None:
    """Load a :func:`save_sharded` directory written on any number of ranks.

    Call on every rank: each reads only the blocks it owns under the current world size.
    An optimizer built with ``blocks=None`` adopts the saved blocks, so a run saved on p
    ranks continues on q ranks with the same trajectory.
    """
    state = ShardedState(directory)
    try:
        optimizer.load_state_dict(state)
    finally:
        state.close()
