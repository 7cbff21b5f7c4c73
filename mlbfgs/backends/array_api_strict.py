"""``array_api_strict``: the standard and nothing more, to prove the core needs no more.

It runs the generic kernels; its arrays wrap a NumPy array, which the overlap checks read.
"""

from __future__ import annotations

import numpy as np

from ..core.types import Array
from .base import Backend


class StrictBackend(Backend):
    """``array_api_strict`` arrays: NumPy underneath (``_array``)."""

    def owns(self, array: object) -> bool:
        return type(array).__module__.startswith("array_api_strict")

    def host_alias(self, array: Array) -> np.ndarray | None:
        inner = getattr(array, "_array", None)
        return inner if isinstance(inner, np.ndarray) else None
