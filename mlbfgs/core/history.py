"""The ring buffer of the M newest curvature pairs (Algorithm 1, line 17: UpdateHessian).

All pairs of a block live in one contiguous ``(2M, n)`` buffer: row ``slot`` holds s and
row ``M + slot`` holds y_hat. Pushing overwrites the oldest slot, so nothing is ever
moved; ``order`` lists the slots oldest first. Pushing also updates the Gram matrices
``S^T Y`` and ``Y^T Y`` (float64, indexed by slot) with two matrix-vector products, so the
compact form (``preconditioner.py``) never has to touch the history to rebuild them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from array_api_compat import device

from .kernels import Kernels
from .types import Array, Namespace


@dataclass
class CurvatureHistory:
    """The M newest pairs (s, y_hat) of one block and their inner products."""

    pairs: Array
    """``(2M, n)``: s in rows ``[0, M)``, y_hat in rows ``[M, 2M)``, by slot."""
    s_dot_y: Array
    """``(M, M)`` float64: ``[i, j] = s_i^T y_hat_j`` by slot."""
    y_dot_y: Array
    """``(M, M)`` float64: ``[i, j] = y_hat_i^T y_hat_j`` by slot."""
    order: list[int] = field(default_factory=list)
    """Occupied slots, oldest pair first."""

    @classmethod
    def empty(
        cls, xp: Namespace, capacity: int, n: int, dtype: object, device: object
    ) -> CurvatureHistory:
        return cls(
            pairs=xp.zeros((2 * capacity, n), dtype=dtype, device=device),
            s_dot_y=xp.zeros((capacity, capacity), dtype=xp.float64, device=device),
            y_dot_y=xp.zeros((capacity, capacity), dtype=xp.float64, device=device),
        )

    @property
    def capacity(self) -> int:
        return int(self.pairs.shape[0]) // 2

    def __len__(self) -> int:
        return len(self.order)

    def push(self, s: Array, y_hat: Array, kernels: Kernels) -> None:
        """Store (s, y_hat) in place of the oldest pair once all M slots are taken."""
        xp, capacity = kernels.xp, self.capacity
        slot = self.order.pop(0) if len(self.order) == capacity else len(self.order)
        self.pairs[slot, :] = s
        self.pairs[capacity + slot, :] = y_hat
        # The new row and column of S^T Y and Y^T Y (the new pair included): s against the
        # y_hat rows only, y_hat against every row, so 3Mn values are read rather than 4Mn.
        s_with_y = xp.astype(kernels.project(self.pairs[capacity:, :], s), xp.float64)
        y_with_all = xp.astype(kernels.project(self.pairs, y_hat), xp.float64)
        self.s_dot_y[slot, :] = s_with_y
        self.s_dot_y[:, slot] = y_with_all[:capacity]
        self.y_dot_y[slot, :] = y_with_all[capacity:]
        self.y_dot_y[:, slot] = y_with_all[capacity:]
        self.order.append(slot)

    def newest(self) -> tuple[Array, Array] | None:
        """Views of the newest stored ``(s, y_hat)``, or ``None`` while the buffer is empty."""
        if not self.order:
            return None
        slot = self.order[-1]
        return self.pairs[slot, :], self.pairs[self.capacity + slot, :]

    def chronological(self, xp: Namespace) -> tuple[Array, Array]:
        """``(s_hist, y_hist)``, each ``(m, n)`` with rows oldest first (copies)."""
        slots = xp.asarray(self.order, dtype=xp.int64, device=device(self.pairs))
        return (
            xp.take(self.pairs, slots, axis=0),
            xp.take(self.pairs, slots + self.capacity, axis=0),
        )
