"""The torch backend (CPU and CUDA tensors): fused fast paths for the hot-path kernels,
and where a tensor's memory is.

Each override does in one call what the generic kernel does in two or three, reading and
writing every vector once, and keeps the parameters' dtype (Python floats never promote
a float32 tensor). Each is tested against the generic :class:`mlbfgs.core.Kernels` on the
same tensors in ``tests/backends/test_kernels.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.kernels import Kernels
from ..core.types import Array
from .base import Backend, Span


class TorchKernels(Kernels):
    """Fused torch versions of the kernels (one launch each on a GPU)."""

    def lerp_all_(self, averages: Sequence[Array], xs: Sequence[Array], weight: float) -> None:
        # One multi-tensor launch on a GPU for both averages of Eq (5).
        torch._foreach_lerp_(list(averages), list(xs), weight)

    def accumulate_all_(self, sums: Sequence[Array], xs: Sequence[Array], decay: float) -> None:
        for total, x in zip(sums, xs, strict=True):
            torch.add(x, total, alpha=decay, out=total)

    def heavy_ball_(self, buffer: Array, direction: Array, momentum: float) -> None:
        torch.add(direction, buffer, alpha=momentum, out=buffer)

    def project(self, pairs: Array, g: Array) -> Array:
        if self.mixed(pairs, g):  # wide results (core/kernels.py)
            return self._project_wide(pairs, g)
        return torch.mv(pairs, g)

    def combine(self, pairs: Array, coefficients: Array, gamma: float, g: Array) -> Array:
        if self.mixed(pairs, g):
            return super().combine(pairs, coefficients, gamma, g)
        # gamma * g + pairs^T c as one GEMV (cuBLAS on a GPU) instead of GEMV + scale + add.
        return torch.addmv(g, pairs.t(), coefficients, beta=gamma)

    def descend(self, theta: Array, direction: Array, lr: float) -> Array:
        return torch.add(theta, direction, alpha=-lr)

    def dot(self, x: Array, y: Array) -> Array:
        if self.mixed(x, y):
            return super().dot(x, y)
        return torch.dot(x, y)


class TorchBackend(Backend):
    """torch tensors: CPU tensors are NumPy-viewable, CUDA tensors are GPU memory."""

    kernels = TorchKernels

    def owns(self, array: object) -> bool:
        return isinstance(array, torch.Tensor)

    def host_alias(self, array: Array) -> np.ndarray | None:
        if array.device.type != "cpu":
            return None
        # An integer view of the same width: NumPy has no bfloat16.
        same_size = {2: torch.int16, 4: torch.int32, 8: torch.int64}[array.element_size()]
        view: np.ndarray = array.detach().view(same_size).numpy()
        return view

    def span(self, array: Array) -> Span | None:
        if array.device.type == "cpu":
            return super().span(array)
        size = int(array.element_size())  # pragma: no cover - needs a GPU
        strides = [int(s) * size for s in array.stride()]  # pragma: no cover
        return str(array.device), int(array.data_ptr()), list(array.shape), strides, size

    def write_problem(self, array: Array) -> str | None:
        if array.requires_grad:
            return "requires grad (torch refuses in-place updates of it); pass p.detach()"
        if array.is_inference() and not torch.is_inference_mode_enabled():
            return "is an inference tensor (torch refuses in-place updates of it)"
        return None

    def writes_through(self, array: Array) -> bool:
        return bool(array.is_contiguous())

    def is_gpu(self, array: Array) -> bool:
        return bool(array.is_cuda)

    def host_view(self, array: Array) -> np.ndarray:
        view: np.ndarray = array.detach().numpy()
        return view

    def device_view(self, array: Array) -> Any:  # pragma: no cover - needs a GPU
        torch.cuda.current_stream(array.device).synchronize()
        return array.detach()

    def pinned(self, like: Array, size: int) -> tuple[Any, np.ndarray]:  # pragma: no cover
        pinned = torch.empty(size, dtype=like.dtype, pin_memory=True)
        return pinned, pinned.numpy()

    def to_pinned(self, array: Array, pinned: Any, view: np.ndarray) -> None:  # pragma: no cover
        pinned.copy_(array.detach())

    def from_pinned(self, pinned: Any, view: np.ndarray, array: Array) -> None:  # pragma: no cover
        array.copy_(pinned)

    def to_numpy(self, array: Array) -> np.ndarray:
        host = array.detach().cpu()  # NumPy has no bfloat16; float32 holds it exactly
        result: np.ndarray = (host.float() if host.dtype == torch.bfloat16 else host).numpy()
        return result
