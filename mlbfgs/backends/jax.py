"""JAX: immutable arrays, so only the pure API (``mlbfgs.jax``, ``core/functional.py``).

The engine writes parameters and state in place and refuses JAX arrays; these kernels
serve the pure step, where a push writes its two rows with one ``dynamic_update_slice``
rather than the generic ``where`` over the whole buffer, where ``cond`` is
``jax.lax.cond`` under a trace, and where float64 exists only under ``jax_enable_x64``.
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

    def write_pair_if(
        self,
        predicate: Array,
        pairs: Array,
        slot: Array,
        s: Array,
        y_hat: Array,
        after: Array | None = None,
    ) -> Array:
        """The two rows written whatever ``predicate`` (their old values where it fails),
        as one ``dynamic_update_slice`` of the ``(2, M, n)`` view, in place when the caller
        donates (where a ``cond`` would pass the whole buffer).

        XLA writes in place only where the write depends on every earlier read of the
        buffer; otherwise it copies the ``(2M, n)`` history around the write (twice per
        step, ``benchmarks/jax_update.py``). So both old rows are read by one slice, and
        the new rows depend on ``after`` (``H g``'s second product, which does not feed
        the pair) through an added zero: ``0 * x`` for a finite x (XLA cannot drop it,
        since ``0 * inf`` is NaN), 0 otherwise; exact, as adding a zero is.
        """
        capacity, n = int(pairs.shape[0]) // 2, int(pairs.shape[1])
        new = jnp.stack([s, y_hat])[:, None, :]
        if after is not None and after.size:
            probe = jnp.ravel(after)[0]
            new = new + jnp.astype(jnp.where(jnp.isfinite(probe), 0.0 * probe, 0.0), new.dtype)
        view = jnp.reshape(pairs, (2, capacity, n))
        start = (jnp.zeros_like(slot), slot, jnp.zeros_like(slot))
        old = jax.lax.dynamic_slice(view, start, (2, 1, n))
        view = jax.lax.dynamic_update_slice(view, jnp.where(predicate, new, old), start)
        return jnp.reshape(view, (2 * capacity, n))

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
