"""How the collectives see the optimizer's arrays: host views, and staging for GPU arrays.

NumPy arrays and torch CPU tensors reach MPI as zero-copy NumPy views. GPU arrays (CuPy,
torch CUDA) go to a CUDA-aware MPI as they are (mpi4py reads the CUDA array interface);
otherwise they are staged through a pinned host buffer that is allocated once per shape.
What each library can do is its backend's (``mlbfgs/backends/``).

The GPU paths (``is_gpu`` true) cannot run on the machine this package is developed and
tested on; they are kept small and isolated here, and are untested (docs/distributed.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import backend_of
from ..core.types import Array


def is_gpu(a: Array) -> bool:
    """Whether ``a`` lives in GPU memory (a CuPy array or a CUDA torch tensor)."""
    return backend_of(a).is_gpu(a)


def host_view(a: Array) -> np.ndarray:
    """A zero-copy NumPy view of a host array (NumPy, or a torch CPU tensor)."""
    return backend_of(a).host_view(a)


def device_view(a: Array) -> Any:  # pragma: no cover - needs a GPU
    """A GPU array as a CUDA-aware MPI takes it, after the device finished writing it."""
    return backend_of(a).device_view(a)


class PinnedStaging:  # pragma: no cover - needs a GPU
    """Pinned host copies of GPU buffers, for an MPI library that is not CUDA-aware."""

    def __init__(self) -> None:
        self._host: dict[tuple[int, str], tuple[Any, np.ndarray]] = {}

    def _buffer(self, a: Array) -> tuple[Any, np.ndarray]:
        key = (int(a.shape[0]), str(a.dtype))
        if key not in self._host:
            self._host[key] = backend_of(a).pinned(a, key[0])
        return self._host[key]

    def to_host(self, a: Array) -> np.ndarray:
        """Copy ``a`` into its pinned host buffer and return that buffer."""
        pinned, view = self._buffer(a)
        backend_of(a).to_pinned(a, pinned, view)
        return view

    def to_device(self, host: np.ndarray, a: Array) -> None:
        """Copy the pinned buffer ``host`` back into ``a``."""
        pinned, _ = self._buffer(a)
        backend_of(a).from_pinned(pinned, host, a)
