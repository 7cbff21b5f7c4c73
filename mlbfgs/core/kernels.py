"""The few O(n) element-wise and matrix-vector operations on the step's hot path.

The core calls these through a :class:`Kernels` object so that a backend can replace any
of them with a fused fast path (``mlbfgs.backends``) while this generic version, written
only against the array API standard, stays the reference every fast path is tested
against.
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import Array, Namespace


class Kernels:
    """Generic array-API implementations of the hot-path operations."""

    def __init__(self, xp: Namespace) -> None:
        self.xp = xp

    def lerp_(self, average: Array, x: Array, weight: float) -> None:
        """In place: ``average <- (1 - weight) * average + weight * x``."""
        average *= 1.0 - weight
        average += weight * x

    def lerp_all_(self, averages: Sequence[Array], xs: Sequence[Array], weight: float) -> None:
        """:meth:`lerp_` for several pairs at once (both averages of Eq (5)); fusable."""
        for average, x in zip(averages, xs, strict=True):
            self.lerp_(average, x, weight)

    def accumulate_all_(self, sums: Sequence[Array], xs: Sequence[Array], decay: float) -> None:
        """In place, for each pair: ``sum <- decay * sum + x`` (the released code's averages)."""
        for total, x in zip(sums, xs, strict=True):
            total *= decay
            total += x

    def heavy_ball_(self, buffer: Array, direction: Array, momentum: float) -> None:
        """In place: ``buffer <- momentum * buffer + direction``."""
        buffer *= momentum
        buffer += direction

    def project(self, pairs: Array, g: Array) -> Array:
        """``pairs @ g``: the 2M inner products of g with every stored s and y_hat."""
        return self.xp.matmul(pairs, g)

    def combine(self, pairs: Array, coefficients: Array, gamma: float, g: Array) -> Array:
        """``gamma * g + pairs^T @ coefficients``: the second product of the compact form."""
        out = self.xp.matmul(coefficients, pairs)
        out += gamma * g
        return out

    def descend(self, theta: Array, direction: Array, lr: float) -> Array:
        """``theta - lr * direction`` as a new array (Eq (2))."""
        return theta - lr * direction

    def dot(self, x: Array, y: Array) -> Array:
        """``x^T y`` of two vectors as a 0-d array (non-finite if either holds NaN or inf)."""
        return self.xp.vecdot(x, y)
