"""Backends: one file per array library, holding all the package knows about it.

Each is the library's hot-path kernels and memory facts (``base.Backend``);
``kernels_for(xp)`` and ``backend_of(array)`` pick one, the generic one for the rest.
"""

from __future__ import annotations

import sys

from array_api_compat import (
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from ..core.kernels import Kernels
from ..core.types import Array, Namespace
from .array_api_strict import StrictBackend
from .base import Backend
from .numpy import NumpyBackend

_GENERIC = Backend()
_HOST = (NumpyBackend(), StrictBackend())
_LOADED: dict[str, Backend] = {}


def _lazy(library: str) -> Backend | None:
    """The backend of ``library`` if that library is imported (so its arrays can exist)."""
    if library not in _LOADED and library in sys.modules:
        if library == "torch":
            from .torch import TorchBackend

            _LOADED[library] = TorchBackend()
        elif library == "jax":
            from .jax import JaxBackend

            _LOADED[library] = JaxBackend()
        else:  # pragma: no cover - needs a GPU
            from .cupy import CupyBackend

            _LOADED[library] = CupyBackend()
    return _LOADED.get(library)


def backend_of(array: Array) -> Backend:
    """The backend of ``array``'s library (the generic one if none is registered)."""
    for host in _HOST:
        if host.owns(array):
            return host
    for library in ("torch", "jax", "cupy"):
        backend = _lazy(library)
        if backend is not None and backend.owns(array):
            return backend
    return _GENERIC


def kernels_for(xp: Namespace) -> Kernels:
    """The hot-path kernels for arrays of namespace ``xp``."""
    if is_numpy_namespace(xp):
        return NumpyBackend().make_kernels(xp)
    if is_torch_namespace(xp):
        from .torch import TorchBackend

        return TorchBackend().make_kernels(xp)
    if is_jax_namespace(xp):
        from .jax import JaxBackend

        return JaxBackend().make_kernels(xp)
    if is_cupy_namespace(xp):
        from .cupy import CupyBackend

        return CupyBackend().make_kernels(xp)
    return Kernels(xp)


__all__ = ["Backend", "backend_of", "kernels_for"]
