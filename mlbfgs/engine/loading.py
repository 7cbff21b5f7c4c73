"""Reading a state dict back into ``MLBFGS``: every check first, then one assignment.

:func:`read_state` checks and decodes a state for this rank without touching the
optimizer; ``MLBFGS.adopt_state`` then swaps the result in, which cannot fail. So a load that
fails (here, or on another rank: ``checkpoint.load_sharded`` decides together) leaves the
optimizer exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import BlockState
from ..core.kernels import state_dtype
from ..core.pieces import validate_pieces
from ..core.types import Array, Namespace
from .distributed import BlockExchange
from .layout import BlockLayout, numel
from .state import FORMAT_VERSION, as_ints, count, decode_block, integer, saved_partition


@dataclass(frozen=True)
class LoadedState:
    """A checked state dict, ready to be adopted by ``MLBFGS.adopt_state``."""

    exchange: BlockExchange
    blocks: dict[int, BlockState]
    step: int


def structure(
    history: int, layouts: Sequence[BlockLayout], params: Sequence[Array]
) -> dict[str, Any]:
    """What a checkpoint must share with an optimizer to be loaded into it."""
    return {
        "history_size": history,
        "partition.pieces": [v for layout in layouts for piece in layout.pieces for v in piece],
        "partition.sizes": [len(layout.pieces) for layout in layouts],
        "param_sizes": [numel(p.shape) for p in params],
    }


def read_state(
    state: Mapping[str, Any],
    exchange: BlockExchange,
    params: Sequence[Array],
    history: int,
    *,
    xp: Namespace,
    adopt_partition: bool,
    fresh_block: Callable[[BlockLayout], BlockState],
    second_moment: bool = False,
) -> LoadedState:
    """Check ``state`` against an optimizer of ``params`` whose blocks ``exchange`` moves,
    and decode the blocks this rank owns into ``fresh_block`` states. With
    ``adopt_partition`` (an optimizer built with ``blocks=None``) a different saved
    partition is taken over and its blocks assigned to this world's ranks; otherwise it
    must match. ``second_moment``: whether the optimizer keeps ``h0="adam"``'s v."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping from a state_dict, got {type(state)}")
    layouts = exchange.layouts
    try:
        version = integer(state["format_version"], "format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"state['format_version'] is {version}; this mlbfgs reads version {FORMAT_VERSION}"
            )
        if adopt_partition:
            saved = saved_partition(state)
            if saved != [list(layout.pieces) for layout in layouts]:
                partition = validate_pieces(saved, [numel(p.shape) for p in params])
                layouts = [BlockLayout.of(b, q, params) for b, q in enumerate(partition)]
                exchange = BlockExchange(exchange.comm, layouts, params)
        partition = [list(layout.pieces) for layout in layouts]
        if saved_partition(state) != partition:
            raise ValueError(
                f"state's partition (blocks) is {saved_partition(state)}, this optimizer "
                f"has {partition}"
            )
        for key, expected in structure(history, layouts, params).items():
            if key.startswith("partition."):
                continue  # compared above
            if as_ints(state[key], key) != as_ints(expected, key):
                raise ValueError(
                    f"state[{key!r}] is {as_ints(state[key], key)}, this optimizer has {expected}"
                )
        step = count(state, "step")
        for b in exchange.owned:
            if f"block{b}.history.pairs" not in state:
                raise KeyError(
                    f"block{b}.history.pairs (block {b} is owned by this rank; a state_dict "
                    "holds only its own rank's blocks: load per-rank checkpoints with "
                    "mlbfgs.checkpoint.load_sharded)"
                )
        blocks = {
            b: decode_block(
                xp,
                f"block{b}.",
                state,
                fresh_block(layouts[b]),
                state_dtype(xp, params[layouts[b].indices[0]].dtype),
                second_moment,
            )
            for b in exchange.owned
        }
    except KeyError as missing:
        raise KeyError(f"state is missing {missing}; is it from MLBFGS.state_dict()?") from None
    return LoadedState(exchange, blocks, step)
