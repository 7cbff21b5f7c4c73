"""How the collectives see the optimizer's arrays: host views, and staging for GPU arrays.

NumPy arrays and torch CPU tensors reach MPI as zero-copy NumPy views. GPU arrays (CuPy,
torch CUDA) go to a CUDA-aware MPI as they are (mpi4py reads the CUDA array interface);
otherwise they are staged through a pinned host buffer that is allocated once per shape.

The GPU paths (``is_gpu`` true) cannot run on the machine this package is developed and
tested on; they are kept small and isolated here, and are untested (docs/distributed.md).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..core.types import Array


def _is_torch(a: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def is_gpu(a: Array) -> bool:
    """Whether ``a`` lives in GPU memory (a CuPy array or a CUDA torch tensor)."""
    if _is_torch(a):
        return bool(a.is_cuda)
    return type(a).__module__.startswith("cupy")


def host_view(a: Array) -> np.ndarray:
    """A zero-copy NumPy view of a host array (NumPy, or a torch CPU tensor)."""
    if _is_torch(a):
        view: np.ndarray = a.detach().numpy()
        return view
    if isinstance(a, np.ndarray):
        return a
    return np.from_dlpack(a)


def device_view(a: Array) -> Any:
    """A GPU array as a CUDA-aware MPI takes it, after the device finished writing it."""
    if _is_torch(a):  # pragma: no cover - needs a GPU
        import torch

        torch.cuda.current_stream(a.device).synchronize()
        return a.detach()
    import cupy  # pragma: no cover - needs a GPU

    cupy.cuda.get_current_stream().synchronize()  # pragma: no cover
    return a  # pragma: no cover


class PinnedStaging:  # pragma: no cover - needs a GPU
    """Pinned host copies of GPU buffers, for an MPI library that is not CUDA-aware."""

    def __init__(self) -> None:
        self._host: dict[tuple[int, str], tuple[Any, np.ndarray]] = {}

    def _buffer(self, a: Array) -> tuple[Any, np.ndarray]:
        key = (int(a.shape[0]), str(a.dtype))
        if key not in self._host:
            if _is_torch(a):
                import torch

                pinned = torch.empty(key[0], dtype=a.dtype, pin_memory=True)
                self._host[key] = (pinned, pinned.numpy())
            else:
                import cupyx

                pinned = cupyx.empty_pinned(key[0], dtype=a.dtype)
                self._host[key] = (pinned, pinned)
        return self._host[key]

    def to_host(self, a: Array) -> np.ndarray:
        """Copy ``a`` into its pinned host buffer and return that buffer."""
        pinned, view = self._buffer(a)
        if _is_torch(a):
            pinned.copy_(a.detach())
        else:
            a.get(out=view)
        return view

    def to_device(self, host: np.ndarray, a: Array) -> None:
        """Copy the pinned buffer ``host`` back into ``a``."""
        pinned, _ = self._buffer(a)
        if _is_torch(a):
            a.copy_(pinned)
        else:
            a.set(host)
