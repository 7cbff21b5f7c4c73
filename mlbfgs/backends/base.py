"""``Backend``: what the package needs to know about one array library, in one place.

The mathematics needs only the array API; the rest of the package needs a few facts the
standard leaves out: where an array's bytes are (overlap checks), whether it can be
written in place, whether a flat reshape writes through, how it reaches MPI and NumPy.
This generic backend knows none of them and answers conservatively; a library's own
file in ``mlbfgs/backends/`` overrides what it knows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..core.kernels import Kernels
from ..core.types import Array, Namespace

Span = tuple[str, int, list[int], list[int], int]
"""``(memory space, address, shape, byte strides, item size)`` of an array."""


class Backend:
    """An array library: its hot-path kernels and its memory facts (generic: none)."""

    kernels: ClassVar[type[Kernels]] = Kernels

    def owns(self, array: object) -> bool:
        """Whether ``array`` belongs to this library."""
        return False

    def make_kernels(self, xp: Namespace) -> Kernels:
        """The hot-path kernels for namespace ``xp``."""
        return self.kernels(xp)

    def host_alias(self, array: Array) -> np.ndarray | None:
        """A NumPy array over the same host bytes (any dtype of the same width), or
        ``None`` when ``array`` is not in host memory or its library does not say."""
        return None

    def span(self, array: Array) -> Span | None:
        """Where ``array``'s elements sit, if the library tells (``None``: unknown)."""
        host = self.host_alias(array)
        if host is None:
            return None
        shape, strides = list(host.shape), list(host.strides)
        return "host", int(host.ctypes.data), shape, strides, int(host.itemsize)

    def write_problem(self, array: Array) -> str | None:
        """Why ``array`` cannot be updated in place, or ``None`` when it can."""
        host = self.host_alias(array)
        if host is not None and not host.flags.writeable:
            return "is read-only (a write-protected NumPy buffer)"
        return None

    def writes_through(self, array: Array) -> bool:
        """Whether writing into a flat reshape of ``array`` writes ``array``."""
        return False

    def is_gpu(self, array: Array) -> bool:
        """Whether ``array`` lives in GPU memory."""
        return False

    def host_view(self, array: Array) -> np.ndarray:
        """A zero-copy NumPy view of a host array, of its own dtype (for MPI)."""
        return np.from_dlpack(array)

    def device_view(self, array: Array) -> Any:  # pragma: no cover - needs a GPU
        """A GPU array as a CUDA-aware MPI takes it, after the device finished writing it."""
        raise TypeError(f"{type(array).__name__} is not a GPU array")

    def pinned(self, like: Array, size: int) -> tuple[Any, np.ndarray]:  # pragma: no cover
        """A pinned host buffer of ``size`` elements of ``like``'s dtype, and its NumPy view."""
        raise TypeError(f"{type(like).__name__} is not a GPU array")

    def to_pinned(self, array: Array, pinned: Any, view: np.ndarray) -> None:  # pragma: no cover
        """Copy the GPU ``array`` into its pinned buffer."""
        raise TypeError(f"{type(array).__name__} is not a GPU array")

    def from_pinned(self, pinned: Any, view: np.ndarray, array: Array) -> None:  # pragma: no cover
        """Copy the pinned buffer back into the GPU ``array``."""
        raise TypeError(f"{type(array).__name__} is not a GPU array")

    def to_numpy(self, array: Array) -> np.ndarray:
        """A host NumPy copy of ``array`` that holds every value exactly (for files)."""
        return np.asarray(array)
