"""Which rank owns which curvature blocks (Section 3.2).

Blocks are a property of the model; ranks are assigned contiguous runs of whole blocks,
balanced by element count, so that each rank's slice of the flat parameter vector is one
contiguous segment (one reduce-scatter and one all-gather serve every block). A rank
owns its blocks' momentum averages and curvature history, so per-rank history memory
is about ``2 * M * d / p``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.partition import balanced_partition


def assign_blocks(block_sizes: Sequence[int], ranks: int) -> list[list[int]]:
    """For each rank, the indices of the blocks it owns: contiguous, balanced by size.

    With fewer blocks than ranks the last ``ranks - len(block_sizes)`` ranks own none
    (they still take part in every collective).
    """
    if ranks < 1:
        raise ValueError(f"the number of ranks must be >= 1, got {ranks}")
    if not block_sizes:
        raise ValueError("there must be at least one block")
    used = min(ranks, len(block_sizes))
    owned = balanced_partition([int(size) for size in block_sizes], used)
    return owned + [[] for _ in range(ranks - used)]


def rank_counts(block_sizes: Sequence[int], assignment: Sequence[Sequence[int]]) -> list[int]:
    """Elements each rank owns: its segment length in the collectives."""
    return [sum(int(block_sizes[b]) for b in blocks) for blocks in assignment]
