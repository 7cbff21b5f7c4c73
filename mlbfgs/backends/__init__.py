"""Backends: an array namespace plus optional fused fast paths for the hot-path kernels.

``kernels_for(xp)`` picks the backend for a namespace. Any namespace that implements the
array API standard works through the generic :class:`mlbfgs.core.Kernels`; a backend
module only overrides what it can do faster, and every override is tested against the
generic version.
"""

from __future__ import annotations

from array_api_compat import is_cupy_namespace, is_numpy_namespace, is_torch_namespace

from ..core.kernels import Kernels
from ..core.types import Namespace


def kernels_for(xp: Namespace) -> Kernels:
    """The hot-path kernels for arrays of namespace ``xp``."""
    if is_numpy_namespace(xp):
        from .numpy import NumpyKernels

        return NumpyKernels(xp)
    if is_torch_namespace(xp):
        from .torch import TorchKernels

        return TorchKernels(xp)
    if is_cupy_namespace(xp):
        from .cupy import CupyKernels

        return CupyKernels(xp)
    return Kernels(xp)


__all__ = ["kernels_for"]
