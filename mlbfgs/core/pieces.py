"""Curvature blocks at sub-tensor granularity: a block is a list of pieces, each a
contiguous range of one parameter's flattened elements.

A block is already a flat vector to the mathematics, so nothing else in the core cares
whether its pieces are whole tensors or slices of one. Balanced blocks matter for scale:
a rank's history memory and step time are those of its blocks, and real models are
dominated by a few large tensors, so blocks of whole tensors leave some ranks with many
times the even share (and some with none) once there are more ranks than large layers.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence

from .config import is_count
from .partition import balanced_partition

Piece = tuple[int, int, int]
"""``(index, start, stop)``: elements ``[start, stop)`` of the flattened ``params[index]``."""


DEFAULT_BLOCKS = 8
"""The default's number of blocks for a model of ``8 * MIN_BLOCK`` to ``16 * BLOCK_ELEMENTS``
elements: a power of two, so that 1, 2, 4 and 8 ranks split it evenly and run the same
optimizer."""
MIN_BLOCK = 2**13
"""No default block has fewer elements (fewer blocks for smaller models, one below
``2 * MIN_BLOCK``): each block costs a few array operations per step, about 0.1 ms on a
CPU, which a block this large amortises (docs/design.md, "Blocks")."""
BLOCK_ELEMENTS = 2**20
"""Above ``16 * BLOCK_ELEMENTS`` elements the default has one block per this many
(rounded down to a power of two), so that larger worlds find enough blocks as well."""
BALANCE = 1.05
"""The largest rank's share of the default blocks over the even share, at most."""


def default_block_count(total: int, ranks: int = 1) -> int:
    """How many element-balanced blocks ``blocks=None`` makes for ``total`` elements.

    A property of the model: a power of two, from ``DEFAULT_BLOCKS``, ``MIN_BLOCK`` and
    ``BLOCK_ELEMENTS``. Only where ``ranks`` ranks cannot hold those blocks within
    ``BALANCE`` of the even share (more ranks than blocks, or a world size such as 3, 5, 6
    or 7 that does not divide them) does the world size matter: the blocks are halved
    until they can, as long as they keep ``MIN_BLOCK`` elements, and otherwise the count
    becomes the next multiple of ``ranks`` (one block per rank for a small model).
    """

    def balanced(count: int) -> bool:  # the largest rank holds ceil(count / ranks) blocks
        return -(-count // ranks) * ranks <= BALANCE * count

    count = 1
    while 2 * count <= DEFAULT_BLOCKS and total >= 2 * count * MIN_BLOCK:
        count *= 2
    while total >= 2 * count * BLOCK_ELEMENTS:
        count *= 2
    finer = count
    while not balanced(finer) and total >= 2 * finer * MIN_BLOCK:
        finer *= 2
    if balanced(finer):
        return finer
    return min(total, -(-count // ranks) * ranks)


def resolve_blocks(blocks: object, sizes: Sequence[int], ranks: int) -> list[list[Piece]]:
    """The ``blocks`` argument of ``MLBFGS`` as pieces, for parameters of ``sizes`` on
    ``ranks`` ranks: ``None`` gives :func:`default_block_count` element-balanced blocks
    (the same on any number of ranks that can hold them in balance); an int k gives k
    blocks of whole tensors ("layers") balanced by size (``1``: one block of everything);
    a list is checked and taken as given (items are indices or pieces)."""
    if isinstance(blocks, bool):
        raise TypeError("blocks must be None, an int or a list of index lists, not a bool")
    if blocks is None:  # equal in elements (tensors split as needed)
        total = sum(int(size) for size in sizes)
        count = default_block_count(total, ranks)
        return [whole(range(len(sizes)), sizes)] if count == 1 else balanced_pieces(sizes, count)
    if is_count(blocks):
        return [whole(group, sizes) for group in balanced_partition(sizes, int(blocks))]
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
        raise TypeError(f"blocks must be None, an int or a list of index lists, got {blocks!r}")
    return validate_pieces(blocks, sizes)


def whole(indices: Sequence[int], sizes: Sequence[int]) -> list[Piece]:
    """The pieces of a block of whole tensors."""
    return [(i, 0, int(sizes[i])) for i in indices]


def balanced_pieces(
    sizes: Sequence[int], parts: int, unit: int = 64, slack: float = 0.02
) -> list[list[Piece]]:
    """``parts`` blocks of consecutive elements of the concatenated tensors, as equal in
    size as ``unit`` allows (for small blocks the unit shrinks to a 64th of a share).

    The k-th cut goes to the nearest tensor boundary if that is within ``slack`` of a
    block's ideal size of the ideal cut ``k * total / parts`` (a layer boundary then costs
    nothing), else inside the tensor on a multiple of ``unit`` elements from its start.
    """
    total = sum(int(s) for s in sizes)
    if not 1 <= parts <= total:
        raise ValueError(f"blocks must be between 1 and the number of elements ({total})")
    unit = max(1, min(unit, total // (64 * parts)))  # at most 1/64 of a share
    ends = list(itertools.accumulate(int(s) for s in sizes))
    starts = [end - int(size) for end, size in zip(ends, sizes, strict=True)]
    share = total / parts
    cuts = [0]
    for k in range(1, parts):
        ideal = k * share
        j = bisect.bisect_left(ends, ideal)
        around = (ends[i] for i in (j - 1, j) if 0 <= i < len(ends))
        nearest = min(around, key=lambda end: abs(end - ideal))
        if abs(nearest - ideal) <= slack * share:
            cut = nearest
        else:  # inside tensor j, which holds the ideal cut
            cut = starts[j] + round((ideal - starts[j]) / unit) * unit
        cuts.append(min(max(cut, cuts[-1] + 1), total - (parts - k)))
    cuts.append(total)
    blocks: list[list[Piece]] = []
    for low, high in itertools.pairwise(cuts):
        block = [
            (i, max(low, start) - start, min(high, end) - start)
            for i, (start, end) in enumerate(zip(starts, ends, strict=True))
            if max(low, start) < min(high, end)
            or (start == end and (low <= start < high or start == high == total))
        ]
        blocks.append(block)
    return blocks


def validate_pieces(blocks: Sequence[Sequence[object]], sizes: Sequence[int]) -> list[list[Piece]]:
    """Explicit blocks whose items are parameter indices (whole tensors) or
    ``(index, start, stop)`` ranges; every element of every parameter exactly once."""
    result: list[list[Piece]] = []
    seen: dict[int, list[tuple[int, int, int]]] = {}
    for b, block in enumerate(blocks):
        if isinstance(block, (str, bytes)) or not isinstance(block, Sequence) or not block:
            raise ValueError(f"blocks[{b}] must be a non-empty list of parameter indices")
        pieces = []
        for item in block:
            piece = _piece(item, b, sizes)
            seen.setdefault(piece[0], []).append((piece[1], piece[2], b))
            pieces.append(piece)
        result.append(pieces)
    for i, size in enumerate(sizes):
        covered = 0
        for start, stop, b in sorted(seen.get(i, [])):
            if start != covered:
                kind = "twice" if start < covered else "not at all"
                raise ValueError(
                    f"blocks must cover every element of every parameter once: params[{i}] "
                    f"element {min(start, covered)} is covered {kind} (blocks[{b}])"
                )
            covered = stop
        if covered != size or i not in seen:
            raise ValueError(
                f"blocks must cover every parameter; params[{i}] is missing or cut short"
            )
    return result


def _piece(item: object, b: int, sizes: Sequence[int]) -> Piece:
    count = len(sizes)
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        if len(item) != 3 or any(isinstance(v, bool) for v in item):
            raise ValueError(f"blocks[{b}] holds {item!r}: a range is (index, start, stop)")
        try:
            i, start, stop = (operator.index(v) for v in item)
        except TypeError:
            raise TypeError(f"blocks[{b}] holds {item!r}, not integers") from None
        if not 0 <= i < count or not 0 <= start < stop <= int(sizes[i]):
            raise ValueError(f"blocks[{b}] holds the range {item!r}, outside params[{i}]")
        return (i, start, stop)
    try:
        i = operator.index(item)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"blocks[{b}] holds {item!r}, not an integer index") from None
    if isinstance(item, bool) or not 0 <= i < count:
        raise ValueError(f"blocks[{b}] holds index {item!r}, outside [0, {count})")
    return (i, 0, int(sizes[i]))
