"""The NumPy reference backend.

NumPy is the reference every other backend is tested against, so it deliberately runs
the generic array-API kernels unchanged: its results define what "correct" means for the
fast paths of the other backends.
"""

from __future__ import annotations

from ..core.kernels import Kernels


class NumpyKernels(Kernels):
    """The generic kernels, on ``array_api_compat.numpy``."""
