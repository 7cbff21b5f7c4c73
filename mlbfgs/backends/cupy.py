"""The CuPy backend: fused element-wise CUDA kernels and cuBLAS GEMV for the hot path.

CuPy cannot run without a GPU, so this module is exercised only where one exists
(``tests/backends/test_kernels.py`` skips it otherwise; ``benchmarks/gpu_check.sh`` runs it). Each
override is tested there against the generic :class:`mlbfgs.core.Kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import cupy
import numpy as np

from ..core.kernels import Kernels
from ..core.types import Array
from .base import Backend, Span


@cache
def _lerp_two() -> Any:
    """Both averages of Eq (5) in one pass: reads theta, g and the averages once."""
    return cupy.ElementwiseKernel(
        "T theta, T g, T w",
        "T m_theta, T m_g",
        "m_theta = m_theta + w * (theta - m_theta); m_g = m_g + w * (g - m_g);",
        "mlbfgs_lerp_two",
    )


@cache
def _axpby() -> Any:
    """``out = a * x + b * y`` in one pass."""
    return cupy.ElementwiseKernel(
        "T x, T y, T a, T b", "T out", "out = a * x + b * y;", "mlbfgs_axpby"
    )


class CupyKernels(Kernels):
    """Fused CuPy versions of the kernels."""

    def _scalar(self, value: float, like: Array) -> Any:
        # A NumPy scalar of the vector's dtype: passed by value (no device allocation), and
        # unlike a Python float it cannot make the kernel compute in float64.
        return like.dtype.type(value)

    def lerp_(self, average: Array, x: Array, weight: float) -> None:
        _axpby()(average, x, self._scalar(1.0 - weight, x), self._scalar(weight, x), average)

    def lerp_all_(self, averages: Sequence[Array], xs: Sequence[Array], weight: float) -> None:
        if len(averages) != 2 or averages[0].shape != averages[1].shape:
            super().lerp_all_(averages, xs, weight)
            return
        w = self._scalar(weight, xs[0])
        _lerp_two()(xs[0], xs[1], w, averages[0], averages[1])

    def accumulate_all_(self, sums: Sequence[Array], xs: Sequence[Array], decay: float) -> None:
        for total, x in zip(sums, xs, strict=True):
            _axpby()(total, x, self._scalar(decay, x), self._scalar(1.0, x), total)

    def heavy_ball_(self, buffer: Array, direction: Array, momentum: float) -> None:
        one = self._scalar(1.0, buffer)
        _axpby()(buffer, direction, self._scalar(momentum, buffer), one, buffer)

    def combine(self, pairs: Array, coefficients: Array, gamma: float, g: Array) -> Array:
        if self.mixed(pairs, g):  # wide coefficients and sums (core/kernels.py)
            return super().combine(pairs, coefficients, gamma, g)
        # gamma * g + pairs^T c as one cuBLAS GEMV accumulating into a copy of g.
        out = g.copy()
        cupy.cublas.gemv("T", 1.0, pairs, coefficients, gamma, out)
        return out

    def descend(self, theta: Array, direction: Array, lr: float) -> Array:
        out = cupy.empty_like(theta)
        _axpby()(theta, direction, self._scalar(1.0, theta), self._scalar(-lr, theta), out)
        return out


class CupyBackend(Backend):  # pragma: no cover - needs a GPU
    """CuPy arrays: GPU memory, strided like NumPy."""

    kernels = CupyKernels

    def owns(self, array: object) -> bool:
        return isinstance(array, cupy.ndarray)

    def span(self, array: Array) -> Span | None:
        shape, strides = list(array.shape), list(array.strides)
        return f"cuda:{array.device.id}", int(array.data.ptr), shape, strides, int(array.itemsize)

    def writes_through(self, array: Array) -> bool:
        return bool(array.flags["C_CONTIGUOUS"])

    def is_gpu(self, array: Array) -> bool:
        return True

    def device_view(self, array: Array) -> Any:
        cupy.cuda.get_current_stream().synchronize()
        return array

    def pinned(self, like: Array, size: int) -> tuple[Any, np.ndarray]:
        import cupyx

        pinned = cupyx.empty_pinned(size, dtype=like.dtype)
        return pinned, pinned

    def to_pinned(self, array: Array, pinned: Any, view: np.ndarray) -> None:
        array.get(out=view)

    def from_pinned(self, pinned: Any, view: np.ndarray, array: Array) -> None:
        array.set(view)

    def to_numpy(self, array: Array) -> np.ndarray:
        result: np.ndarray = array.get()
        return result
