"""Where ``mlbfgs.torch.MLBFGS`` keeps its engines' state inside ``optimizer.state``.

torch's own machinery works on ``optimizer.state``, a dict from each parameter to a dict
of its state: ``state_dict`` / ``load_state_dict`` with their hooks and their casting to
the parameters' dtype and device, ``copy.deepcopy``, pickling, and
``torch.distributed.checkpoint``. So each param group's engine state is laid out there:

- under every parameter: its slices of the block's vectors (``averages.theta``,
  ``averages.grad``, ``averages.snapshot_theta``, ``averages.snapshot_grad``,
  ``momentum_buffer``, and ``second_moment`` with ``h0="adam"``), shaped like the
  parameter; a parameter split across blocks (several ranks) has flat slices
  ``name@start`` instead, one per piece. All of them always, zeros where the block has
  no such vector yet (before the first step, the first boundary, without momentum):
  ``torch.distributed.checkpoint`` loads only the keys of the state it loads into,
  which a fresh optimizer lays out;
- under the first parameter of each block: ``block.history.pairs`` (cast on load like
  every tensor; a half-precision history is narrowed back exactly,
  ``mlbfgs/engine/state.py``), the Gram matrices ``block.history.s_dot_y`` /
  ``block.history.y_dot_y`` and the rows' scales ``block.history.scales`` as lists of
  floats (they are float64 whatever the parameters' dtype, and ``load_state_dict``
  would cast a tensor), the slot order ``block.history.order``, the counters
  ``block.stats.*`` and ``block.present``, the indices in ``mlbfgs.engine.state.VECTORS``
  of the vectors the block holds (``block@start.*`` when the block starts inside that
  parameter); a state without ``block.present`` (saved before it existed) holds the
  vectors present and no others;
- under the first parameter of the group: ``group.step`` and ``group.partition`` (the
  blocks, as lists of ``[index, start, stop]`` pieces within the group).

The engines stay the source of truth: :func:`param_state` lays out their state without
copies (tensors are views), and :func:`engine_state` turns a (loaded) layout back into
the flat dict that :meth:`mlbfgs.MLBFGS.load_state_dict` checks and adopts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from ..comm import Communicator
from ..engine import MLBFGS
from ..engine.state import FORMAT_VERSION, VECTORS

GROUP = "group."
BLOCK = "block."
PRESENT = "present"
"""``block.present``: which vectors a block holds, as indices in ``VECTORS`` (a list of
strings would not survive ``load_state_dict``, which rebuilds each ``str`` it casts)."""
FLOAT64 = ("history.s_dot_y", "history.y_dot_y", "history.scales")
"""Kept as lists of floats: ``load_state_dict`` would cast a tensor to the parameters' dtype."""


def _block_prefix(piece: Sequence[int]) -> str:
    """Where a block's own entries sit under its first piece's parameter."""
    return BLOCK if piece[1] == 0 else f"block@{piece[1]}."


def vector_names(engine: MLBFGS) -> list[str]:
    """The vectors a block of ``engine`` may hold (``second_moment`` with ``h0="adam"``)."""
    return [n for n in VECTORS if n != "second_moment" or engine.config.h0 == "adam"]


def param_state(engine: MLBFGS, flat: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per parameter of the group, its state, from the engine's ``flat`` state dict
    (``engine.state_dict(copy=False)``: the tensors returned are views of the engine's,
    the placeholders of absent vectors fresh zeros)."""
    state: list[dict[str, Any]] = [{} for _ in engine.params]
    state[0][GROUP + "step"] = int(flat["step"])
    state[0][GROUP + "partition"] = [[list(p) for p in layout.pieces] for layout in engine.layouts]
    names = vector_names(engine)
    for b in engine.owned:
        layout, prefix = engine.layouts[b], f"block{b}."
        head, head_prefix = state[layout.pieces[0][0]], _block_prefix(layout.pieces[0])
        for key, value in flat.items():
            name = key[len(prefix) :]
            if not key.startswith(prefix) or name in VECTORS:
                continue
            head[head_prefix + name] = value.tolist() if name in FLOAT64 else value
        head[head_prefix + PRESENT] = [VECTORS.index(n) for n in names if prefix + n in flat]
        first = engine.params[layout.pieces[0][0]]
        for name in names:
            value = flat.get(prefix + name)
            if value is None:  # a placeholder, so that a fresh optimizer has every key
                value = torch.zeros(layout.numel, dtype=first.dtype, device=first.device)
            offset = 0
            for (i, start, stop), shape in zip(layout.pieces, layout.shapes, strict=True):
                part = value[offset : offset + stop - start]
                if (start, stop) == (0, math.prod(shape)):  # the whole parameter
                    state[i][name] = part.view(shape)
                else:
                    state[i][f"{name}@{start}"] = part
                offset += stop - start
    return state


def engine_state(
    engine: MLBFGS, params: Sequence[torch.Tensor], state: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The flat state dict of ``engine`` from the per-parameter ``state`` of its group.

    Raises ``KeyError`` naming what is missing; values are checked by the engine's own
    ``load_state_dict``.
    """
    first = state[0]
    if GROUP + "partition" not in first:
        raise KeyError("group.partition (the group's first parameter has no mL-BFGS state)")
    partition = [
        [tuple(int(v) for v in piece) for piece in block] for block in first[GROUP + "partition"]
    ]
    flat: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "step": first[GROUP + "step"],
        "history_size": engine.config.history_size,
        "partition.pieces": [v for block in partition for piece in block for v in piece],
        "partition.sizes": [len(block) for block in partition],
        "param_sizes": [p.numel() for p in params],
    }
    for b, pieces in enumerate(partition):
        if not all(len(piece) == 3 and 0 <= piece[0] < len(state) for piece in pieces):
            raise KeyError(f"group.partition names parameters outside the group: {partition}")
        head, prefix = state[pieces[0][0]], _block_prefix(pieces[0])
        for key, value in head.items():
            name = key[len(prefix) :]
            if not key.startswith(prefix) or name == PRESENT:
                continue
            if name in FLOAT64:
                value = torch.as_tensor(value, dtype=torch.float64, device=params[0].device)
            flat[f"block{b}." + name] = value
        present = _present(head.get(prefix + PRESENT), prefix)
        for name in VECTORS:
            parts = [
                state[i].get(name if (start, stop) == (0, params[i].numel()) else f"{name}@{start}")
                for i, start, stop in pieces
            ]
            if present is not None and name in present and None in parts:
                raise KeyError(f"{name} (listed in {prefix + PRESENT}) of block {b}")
            whole = [part.reshape(-1) for part in parts if part is not None]
            if len(whole) == len(parts) and (present is None or name in present):
                flat[f"block{b}." + name] = torch.cat(whole)
    return flat


def _present(value: Any, prefix: str) -> set[str] | None:
    """The vectors named by a loaded ``block.present`` (``None``: a state saved before it
    existed, whose vectors are those present)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(VECTORS) for k in value
    ):
        raise ValueError(
            f"state {prefix + PRESENT!r} must list indices of {VECTORS}, got {value!r:.200}"
        )
    return {VECTORS[k] for k in value}


def gather_every_rank(
    comm: Communicator, state: Mapping[int, Mapping[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Every rank's ``state`` (torch's packed ``"state"``, keyed by parameter index) merged:
    each rank holds its own blocks, so together they hold all. A collective; tensors
    arrive on the CPU (``load_state_dict`` moves them to the parameters' device)."""
    mine = {
        index: {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
        for index, s in state.items()
    }
    merged: dict[int, dict[str, Any]] = {}
    for theirs in comm.allgather_object(mine):
        for index, entries in theirs.items():
            merged.setdefault(index, {}).update(entries)
    return dict(sorted(merged.items()))


def uncast_state(
    groups: Iterable[Mapping[str, Any]], state_dict: Mapping[str, Any]
) -> dict[torch.Tensor, dict[str, torch.Tensor]]:
    """For each half-precision parameter, its saved tensors of a wider floating dtype, as
    saved (moved to the parameter's device only).

    ``torch.optim.Optimizer.load_state_dict`` casts every tensor of a parameter's state to
    the parameter's dtype, which would round the float32 averages, heavy-ball buffer and
    pairs of a bfloat16 parameter (``mlbfgs.core.kernels.state_dtype``) to bfloat16.
    Parameters are matched to saved entries by position, as torch matches them; anything
    malformed is left to torch's own checks.
    """
    saved_groups, saved_state = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(saved_groups, Sequence) or not isinstance(saved_state, Mapping):
        return {}
    result: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
    for group, saved in zip(groups, saved_groups, strict=False):
        if not isinstance(saved, Mapping):
            continue
        for p, key in zip(group["params"], saved.get("params", ()), strict=False):
            entries = saved_state.get(key)
            if p.itemsize >= 4 or not isinstance(entries, Mapping):
                continue
            wide = {
                name: value.to(device=p.device)
                for name, value in entries.items()
                if isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and value.itemsize > p.itemsize
            }
            if wide:
                result[p] = wide
    return result
