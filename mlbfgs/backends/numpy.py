"""The NumPy reference backend.

NumPy is the reference every other backend is tested against, so it deliberately runs
the generic array-API kernels unchanged: its results define what "correct" means for the
fast paths of the other backends.
"""

from __future__ import annotations

import numpy as np

from ..core.kernels import Kernels
from ..core.types import Array
from .base import Backend


class NumpyKernels(Kernels):
    """The generic kernels, on ``array_api_compat.numpy``."""


class NumpyBackend(Backend):
    """NumPy arrays: host memory, strided, writable unless flagged otherwise."""

    kernels = NumpyKernels

    def owns(self, array: object) -> bool:
        return isinstance(array, np.ndarray)

    def host_alias(self, array: Array) -> np.ndarray | None:
        return array if isinstance(array, np.ndarray) else None

    def writes_through(self, array: Array) -> bool:
        return bool(array.flags["C_CONTIGUOUS"])

    def host_view(self, array: Array) -> np.ndarray:
        return np.asarray(array)
