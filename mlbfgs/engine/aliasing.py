"""Where parameter arrays live: can they be written, and do two of them share memory?

Both are checked once, at construction, because either fault would only show in the
middle of a step: a read-only array refuses the write after the optimizer state was
updated (half a step), and two views of one buffer overwrite each other's update.

Overlap is found by address ranges first (sorted, so n arrays cost O(n log n)) and then
confirmed exactly for arrays in host memory (``numpy.shares_memory``), so interleaved
views such as ``buf[::2]`` and ``buf[1::2]`` are accepted. GPU arrays whose address
ranges intersect are refused without the exact check. Arrays of libraries that expose
no address (say, a lazy array library) are not checked.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.types import Array


def write_problem(p: Array) -> str | None:
    """Why ``p`` cannot be updated in place, or ``None`` when it can."""
    host = _numpy_view(p)
    if host is not None and not host.flags.writeable:
        return "is read-only (a write-protected NumPy buffer)"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(p, torch.Tensor):
        if p.requires_grad:
            return "requires grad (torch refuses in-place updates of it); pass p.detach()"
        if p.is_inference() and not torch.is_inference_mode_enabled():
            return "is an inference tensor (torch refuses in-place updates of it)"
    return None


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
    x, y = _numpy_view(a), _numpy_view(b)
    if x is None or y is None:
        return True
    return bool(np.shares_memory(x, y))


def _span(a: Array) -> tuple[str, int, int] | None:
    """``(memory space, first byte, end)`` of the bytes ``a`` may touch, or ``None``."""
    layout = _layout(a)
    if layout is None:
        return None
    space, pointer, shape, strides, itemsize = layout
    if any(d == 0 for d in shape):
        return None
    offsets = [s * (d - 1) for s, d in zip(strides, shape, strict=True)]
    low = pointer + sum(o for o in offsets if o < 0)
    high = pointer + sum(o for o in offsets if o > 0) + itemsize
    return space, low, high


def _layout(a: Array) -> tuple[str, int, list[int], list[int], int] | None:
    """``(memory space, address, shape, byte strides, item size)`` of ``a``, if known."""
    host = _numpy_view(a)
    if host is not None:
        shape, strides = list(host.shape), list(host.strides)
        return "host", int(host.ctypes.data), shape, strides, int(host.itemsize)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):  # pragma: no cover - needs a GPU
        size = int(a.element_size())
        strides = [int(s) * size for s in a.stride()]
        return str(a.device), int(a.data_ptr()), list(a.shape), strides, size
    if type(a).__module__.startswith("cupy"):  # pragma: no cover - needs a GPU
        shape, strides = list(a.shape), list(a.strides)
        return f"cuda:{a.device.id}", int(a.data.ptr), shape, strides, int(a.itemsize)
    return None


def _numpy_view(a: Any) -> np.ndarray | None:
    """A NumPy view of a host array (NumPy, array_api_strict, torch CPU), else ``None``."""
    if isinstance(a, np.ndarray):
        return a
    inner = getattr(a, "_array", None)  # array_api_strict wraps a NumPy array
    if isinstance(inner, np.ndarray):
        return inner
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor) and a.device.type == "cpu":
        same_size = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        view: np.ndarray = a.detach().view(same_size).numpy()
        return view
    return None
