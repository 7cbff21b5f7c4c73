"""The ring buffer of the M newest curvature pairs (Algorithm 1, line 17: UpdateHessian).

All pairs of a block live in one contiguous ``(2M, n)`` buffer: row ``slot`` holds s and
row ``M + slot`` holds y_hat. Pushing overwrites the oldest slot, so nothing is ever
moved; ``order`` lists the slots oldest first. Pushing also updates the Gram matrices
``S^T Y`` and ``Y^T Y`` (float64, indexed by slot) with two matrix-vector products, so the
compact form (``preconditioner.py``) never has to touch the history to rebuild them.

The buffer may be stored in half precision (``history_dtype``) to halve the memory and the
step's dominant traffic. Each half-precision row is then divided by a power of two,
``scales[row]``, that puts its largest entry in ``[2^14, 2^15)``: float16 (largest finite
65504) keeps every entry down to ``2^-29`` of the row's largest at full relative
precision, where unscaled parameter differences of 1e-6 would be subnormal. The
division is exact, the products accumulate in float32 or wider (``kernels.py``), and the
Gram matrices are computed from the stored (rounded) rows, so the compact form is exactly
the L-BFGS matrix of the pairs as stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from array_api_compat import array_namespace, device

from .kernels import Kernels, is_half, wide_dtype
from .types import Array, Namespace

ROW_PEAK_EXPONENT = 15
"""A scaled row's largest entry lies in ``[2^(e-1), 2^e)`` for this e."""


@dataclass
class CurvatureHistory:
    """The M newest pairs (s, y_hat) of one block and their inner products."""

    pairs: Array
    """``(2M, n)``: s in rows ``[0, M)``, y_hat in rows ``[M, 2M)``, by slot (divided by
    ``scales`` when present)."""
    s_dot_y: Array
    """``(M, M)`` float64: ``[i, j] = s_i^T y_hat_j`` by slot."""
    y_dot_y: Array
    """``(M, M)`` float64: ``[i, j] = y_hat_i^T y_hat_j`` by slot."""
    order: list[int] = field(default_factory=list)
    """Occupied slots, oldest pair first."""
    scales: Array | None = None
    """``(2M,)`` float64 powers of two, for half-precision ``pairs`` only: the pair in row
    r is ``scales[r] * pairs[r]``."""

    @classmethod
    def empty(
        cls, xp: Namespace, capacity: int, n: int, dtype: object, device: object
    ) -> CurvatureHistory:
        """An empty buffer stored in ``dtype`` (scaled rows if it is half precision)."""
        return cls(
            pairs=xp.zeros((2 * capacity, n), dtype=dtype, device=device),
            s_dot_y=xp.zeros((capacity, capacity), dtype=xp.float64, device=device),
            y_dot_y=xp.zeros((capacity, capacity), dtype=xp.float64, device=device),
            scales=(
                xp.ones((2 * capacity,), dtype=xp.float64, device=device)
                if is_half(xp, dtype)
                else None
            ),
        )

    @property
    def capacity(self) -> int:
        return int(self.pairs.shape[0]) // 2

    def __len__(self) -> int:
        return len(self.order)

    def arrays(self) -> list[Array]:
        """Every array the history holds (for counting its bytes)."""
        held = [self.pairs, self.s_dot_y, self.y_dot_y]
        return held if self.scales is None else [*held, self.scales]

    def push(self, s: Array, y_hat: Array, kernels: Kernels) -> None:
        """Store (s, y_hat) in place of the oldest pair once all M slots are taken."""
        xp, capacity = kernels.xp, self.capacity
        slot = self.order.pop(0) if len(self.order) == capacity else len(self.order)
        self._store(slot, s)
        self._store(capacity + slot, y_hat)
        # The new row and column of S^T Y and Y^T Y (the new pair included), from the rows
        # as stored.
        s_with_y, y_with_all = new_products(
            kernels, self.pairs, self.pairs[slot, :], self.pairs[capacity + slot, :], xp.float64
        )
        if self.scales is not None:  # back to the pairs' own values (exact: powers of two)
            s_with_y = s_with_y * (self.scales[capacity:] * self.scales[slot])
            y_with_all = y_with_all * (self.scales * self.scales[capacity + slot])
        self.s_dot_y[slot, :] = s_with_y
        self.s_dot_y[:, slot] = y_with_all[:capacity]
        self.y_dot_y[slot, :] = y_with_all[capacity:]
        self.y_dot_y[:, slot] = y_with_all[capacity:]
        self.order.append(slot)

    def _store(self, row: int, vector: Array) -> None:
        if self.scales is None:
            self.pairs[row, :] = vector
            return
        xp = array_namespace(vector)
        _, exponent = math.frexp(float(xp.max(xp.abs(vector))))  # 0 for a zero vector
        shift = ROW_PEAK_EXPONENT - exponent
        # Scaled in float32 or wider (a half vector would overflow), in two halves so that
        # neither factor leaves float32's range; both are exact.
        scaled = xp.astype(vector, wide_dtype(xp, vector.dtype))
        scaled *= 2.0 ** (shift // 2)
        scaled *= 2.0 ** (shift - shift // 2)
        self.pairs[row, :] = xp.astype(scaled, self.pairs.dtype)
        self.scales[row] = 2.0**-shift

    def newest(self, dtype: object) -> tuple[Array, Array] | None:
        """The newest stored ``(s, y_hat)`` in ``dtype`` (views when stored in ``dtype``),
        or ``None`` while the buffer is empty."""
        if not self.order:
            return None
        slot = self.order[-1]
        rows = (self.pairs[slot, :], self.pairs[self.capacity + slot, :])
        if self.scales is None and self.pairs.dtype == dtype:
            return rows
        xp = array_namespace(self.pairs)
        return (
            self._decoded(xp, rows[0], slot, dtype),
            self._decoded(xp, rows[1], self.capacity + slot, dtype),
        )

    def _decoded(self, xp: Namespace, row: Array, index: int, dtype: object) -> Array:
        if self.scales is None:
            return xp.astype(row, dtype)
        value = xp.astype(row, wide_dtype(xp, dtype))  # a half scale could underflow
        value *= float(self.scales[index])
        return xp.astype(value, dtype, copy=False)

    def chronological(self, xp: Namespace) -> tuple[Array, Array]:
        """``(s_hist, y_hist)``, each ``(m, n)`` with rows oldest first (copies; the pairs'
        own values, in float32 or wider when stored scaled)."""
        slots = xp.asarray(self.order, dtype=xp.int64, device=device(self.pairs))
        s_hist = xp.take(self.pairs, slots, axis=0)
        y_hist = xp.take(self.pairs, slots + self.capacity, axis=0)
        if self.scales is None:
            return s_hist, y_hist
        wide = wide_dtype(xp, self.pairs.dtype)
        return tuple(
            xp.astype(rows, wide) * xp.astype(xp.take(self.scales, index, axis=0), wide)[:, None]
            for rows, index in ((s_hist, slots), (y_hist, slots + self.capacity))
        )


def new_products(
    kernels: Kernels, pairs: Array, s: Array, y_hat: Array, dtype: object
) -> tuple[Array, Array]:
    """The Gram matrices' new row and column when the pair ``(s, y_hat)`` has just been
    stored in ``pairs``: ``s`` against the y_hat rows, ``y_hat`` against every row (so 3Mn
    values are read rather than 4Mn), as ``dtype``. Both shapes of the push use it
    (``CurvatureHistory.push``, ``pure_pairs.compact_after_push``)."""
    xp, capacity = kernels.xp, int(pairs.shape[0]) // 2
    s_with_y = xp.astype(kernels.project(pairs[capacity:, :], s), dtype)
    return s_with_y, xp.astype(kernels.project(pairs, y_hat), dtype)
