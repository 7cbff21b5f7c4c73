"""The torch backend (CPU and CUDA tensors): fused fast paths for the hot-path kernels.

Each override does in one call what the generic kernel does in two or three, reading and
writing every vector once, and keeps the parameters' dtype (Python floats never promote
a float32 tensor). Each is tested against the generic :class:`mlbfgs.core.Kernels` on the
same tensors in ``tests/test_backends.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.kernels import Kernels
from ..core.types import Array


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
