"""``ShardExchange``: blocks made of this rank's own shards of the parameters.

When the parameters are already sharded (FSDP2's ``fully_shard``, tensor parallelism),
every rank holds a different part of the model and its gradients arrive already reduced
(FSDP reduce-scatters them). Each rank's curvature blocks are then made of its own
shards: it owns all of its blocks, no gradient or parameter crosses the network for the
optimizer, and the result is that of one process whose blocks are every rank's shards,
in rank order. Blocks never mix, so only two things need the other ranks: the sum over
all blocks that ``step_norm="unit"`` takes (one small all-gather of one float64 per
block, summed in rank-then-block order, so every rank gets the same bits as that one
process) and, under ``on_nonfinite="raise"``, agreeing that some rank saw a NaN (one
small collective), so that every rank raises and none waits in a later collective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from array_api_compat import device

from ..comm import Communicator, SingleProcessComm
from ..core.types import Array, Namespace
from .distributed import BlockExchange
from .layout import BlockLayout


class ShardExchange(BlockExchange):
    """Every block is this rank's; ``shards`` is the group over which the shards differ."""

    def __init__(
        self, shards: Communicator, layouts: Sequence[BlockLayout], params: Sequence[Array]
    ) -> None:
        super().__init__(SingleProcessComm(), layouts, params)  # nothing moves: all mine
        self.shards = shards
        self._block_counts: list[int] | None = None

    def block_counts(self) -> list[int]:
        """Blocks per rank of the shard group (gathered once, at the first need)."""
        if self._block_counts is None:
            counts = self.shards.allgather_object(len(self.layouts))
            self._block_counts = [int(count) for count in counts]
        return self._block_counts

    def sum_over_blocks(self, xp: Namespace, values: Mapping[int, Array]) -> Array:
        """The sum of one 0-d value per block over every block of every rank, summed in
        rank order and then block order: bitwise what one process with all ranks' blocks
        (in that order) computes. A collective when the shards span several ranks."""
        if self.shards.size == 1:
            return super().sum_over_blocks(xp, values)
        counts = self.block_counts()
        start = sum(counts[: self.shards.rank])
        where = device(self._like)
        vector = xp.zeros((sum(counts),), dtype=xp.float64, device=where)
        for b, value in values.items():
            vector[start + b] = xp.astype(value, xp.float64)
        self.shards.allgatherv(vector, counts)
        return xp.sum(vector)

    def everyone_bad(self, bad: list[int]) -> list[list[int]]:
        """Each rank's blocks with a non-finite gradient (its own block numbers)."""
        if self.shards.size == 1:
            return [list(bad)]
        return [list(found) for found in self.shards.allgather_object(list(bad))]

    def describe(self, bad_blocks: Sequence[Sequence[int]]) -> str:
        """The message for ``bad_blocks[r]``, rank ``r``'s blocks with a non-finite gradient
        (each rank adds the parameters of its own)."""
        ranks = [
            f"rank {r}: block(s) {sorted(found)}" for r, found in enumerate(bad_blocks) if found
        ]
        mine = sorted({i for b in bad_blocks[self.shards.rank] for i in self.layouts[b].indices})
        here = f" (on this rank, the shards of params {mine})" if mine else ""
        return (
            f"non-finite gradient (or overflow) in the shards of {'; '.join(ranks)}{here}; "
            "nothing was changed"
        )
