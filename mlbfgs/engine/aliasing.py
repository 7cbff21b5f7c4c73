"""Where parameter arrays live: can they be written, and do two of them share memory?

Both are checked once, at construction, because either fault would only show in the
middle of a step: a read-only array refuses the write after the optimizer state was
updated (half a step), and two views of one buffer overwrite each other's update.

Overlap is found by address ranges first (sorted, so n arrays cost O(n log n)) and then
confirmed exactly for arrays in host memory (``numpy.shares_memory``), so interleaved
views such as ``buf[::2]`` and ``buf[1::2]`` are accepted. GPU arrays whose address
ranges intersect are refused without the exact check. Arrays of libraries that expose
no address (say, a lazy array library) are not checked. Each library's facts (host view,
address span, writability) come from its backend (``mlbfgs/backends/``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backends import backend_of
from ..core.types import Array


def write_problem(p: Array) -> str | None:
    """Why ``p`` cannot be updated in place, or ``None`` when it can."""
    return backend_of(p).write_problem(p)


def first_overlap(arrays: Sequence[Array]) -> tuple[int, int] | None:
    """The first pair ``(i, j)``, ``i < j``, of arrays that share memory, or ``None``."""
    spans = sorted((span, i) for i, a in enumerate(arrays) if (span := _span(a)) is not None)
    active: list[tuple[str, int, int]] = []  # (space, end, index) of spans still open
    for (space, start, end), i in spans:
        active = [(where, stop, j) for where, stop, j in active if where == space and stop > start]
        for _, _, j in active:
            if shares_memory(arrays[i], arrays[j]):
                return (min(i, j), max(i, j))
        active.append((space, end, i))
    return None


def shares_memory(a: Array, b: Array) -> bool:
    """Exactly whether two arrays with intersecting address ranges share an element.

    Host arrays are compared with ``numpy.shares_memory``; others are assumed to.
    """
    x, y = backend_of(a).host_alias(a), backend_of(b).host_alias(b)
    if x is None or y is None:
        return True
    return bool(np.shares_memory(x, y))


def _span(a: Array) -> tuple[str, int, int] | None:
    """``(memory space, first byte, end)`` of the bytes ``a`` may touch, or ``None``."""
    layout = backend_of(a).span(a)
    if layout is None:
        return None
    space, pointer, shape, strides, itemsize = layout
    if any(d == 0 for d in shape):
        return None
    offsets = [s * (d - 1) for s, d in zip(strides, shape, strict=True)]
    low = pointer + sum(o for o in offsets if o < 0)
    high = pointer + sum(o for o in offsets if o > 0) + itemsize
    return space, low, high
