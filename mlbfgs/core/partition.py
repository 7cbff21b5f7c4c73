"""Balanced contiguous cuts (Section 3.2): ``blocks=k`` (k blocks of whole tensors,
balanced by size) and the runs of whole blocks each rank is assigned.

A curvature block is a list of pieces, whole tensors or ranges of one (``pieces.py``);
each has its own averages, history, gamma and damping, so the inverse-Hessian
approximation is block diagonal. Blocks are a property of the model, not of the world
size: a checkpoint keeps them.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence


def balanced_partition(sizes: Sequence[int], parts: int) -> list[list[int]]:
    """Split indices ``0..len(sizes)-1`` into ``parts`` contiguous, non-empty groups.

    The largest group's total size is as small as possible (binary search on the
    capacity, then a greedy cut that also leaves one index for every group still to come).
    """
    count = len(sizes)
    if not 1 <= parts <= count:
        raise ValueError(f"blocks must be between 1 and the number of parameters ({count})")

    def groups_needed(capacity: int) -> int:
        groups, load = 1, 0
        for size in sizes:
            if load + size > capacity:
                groups, load = groups + 1, 0
            load += size
        return groups

    low, high = max(sizes), sum(sizes)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if groups_needed(mid) <= parts else (mid + 1, high)

    blocks: list[list[int]] = [[]]
    load = 0
    for index, size in enumerate(sizes):
        groups_after_current = parts - len(blocks)
        must_cut = count - index <= groups_after_current
        if blocks[-1] and (load + size > low or must_cut):
            blocks.append([])
            load = 0
        blocks[-1].append(index)
        load += size
    return blocks


def validate_partition(blocks: Sequence[Sequence[int]], count: int) -> list[list[int]]:
    """Check that explicit blocks cover every parameter index exactly once (whole tensors
    by index; ``pieces.validate_pieces`` checks the blocks ``MLBFGS`` takes, and the
    tests use this one as the rule for lists of whole tensors)."""
    seen: dict[int, int] = {}
    result: list[list[int]] = []
    for b, block in enumerate(blocks):
        if isinstance(block, (str, bytes)) or not isinstance(block, Sequence) or not block:
            raise ValueError(f"blocks[{b}] must be a non-empty list of parameter indices")
        indices = []
        for index in block:
            try:
                i = operator.index(index)
            except TypeError:
                raise TypeError(f"blocks[{b}] holds {index!r}, not an integer index") from None
            if isinstance(index, bool) or not 0 <= i < count:
                raise ValueError(f"blocks[{b}] holds index {index!r}, outside [0, {count})")
            if i in seen:
                raise ValueError(f"parameter {i} is in blocks[{seen[i]}] and blocks[{b}]")
            seen[i] = b
            indices.append(i)
        result.append(indices)
    missing = sorted(set(range(count)) - seen.keys())
    if missing:
        raise ValueError(f"blocks must cover every parameter; missing indices {missing}")
    return result
