"""JAX: immutable arrays, so only the pure API (``mlbfgs.jax``, ``core/functional.py``).

The engine writes parameters and state in place and refuses JAX arrays; these kernels
serve the pure step, where a ring-buffer row is one ``.at[row].set`` rather than the
generic ``where`` over the whole buffer, and where float64 exists only under
``jax_enable_x64``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..core.kernels import Kernels, T
from ..core.types import Array
from .base import Backend


class JaxKernels(Kernels):
    """The generic kernels with a one-row write and JAX's widest enabled float."""

    def write_row_if(self, predicate: Array, matrix: Array, row: Array, vector: Array) -> Array:
        """One row written whatever ``predicate`` (its old value where it fails): in place
        when the caller donates, where a ``cond`` would pass the whole matrix."""
        return matrix.at[row].set(jnp.where(predicate, vector, matrix[row]))

    def cond(
        self,
        predicate: Array,
        if_true: Callable[..., T],
        if_false: Callable[..., T],
        *operands: Array,
    ) -> T:
        if not isinstance(predicate, jax.core.Tracer):  # eager: no branch to compile
            return super().cond(predicate, if_true, if_false, *operands)
        return jax.lax.cond(predicate, if_true, if_false, *operands)

    @property
    def gram_dtype(self) -> object:
        """float64 under ``jax_enable_x64``, else float32 (JAX's widest then)."""
        return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


class JaxBackend(Backend):
    """JAX arrays: immutable, so never written in place."""

    kernels = JaxKernels

    def owns(self, array: object) -> bool:
        return isinstance(array, jax.Array)

    def write_problem(self, array: Array) -> str | None:
        return (
            "is a JAX array, which is immutable; the engine writes parameters in place, so "
            "use the pure API: mlbfgs.jax.mlbfgs (an optax GradientTransformation)"
        )
