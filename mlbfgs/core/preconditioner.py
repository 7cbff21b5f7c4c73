"""The preconditioner ``d = H g`` in the compact form of Byrd, Nocedal and Schnabel (1994).

With the m stored pairs oldest first as columns of S and Y, ``R = triu(S^T Y)``,
``D = diag(S^T Y)`` and ``H_0 = gamma I`` (``gamma = s^T y_hat / y_hat^T y_hat`` of the
newest pair), the L-BFGS matrix of Algorithm 2 is

.. math::
    H g = \\gamma g + [S \\; Y]
    \\begin{bmatrix} R^{-T}(D + \\gamma Y^T Y) R^{-1} & -\\gamma R^{-T} \\\\
                     -\\gamma R^{-1} & 0 \\end{bmatrix}
    \\begin{bmatrix} S^T g \\\\ Y^T g \\end{bmatrix}

so one step reads the ``(2M, n)`` history twice (two matrix-vector products) and does
O(M^2) small algebra; the ``2M x 2M`` middle matrix changes only when a pair is pushed.
It equals the two-loop recursion (``two_loop.py``) up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

from array_api_compat import device

from .history import CurvatureHistory
from .kernels import Kernels, wide_dtype
from .types import Array, Namespace


@dataclass(frozen=True)
class CompactForm:
    """The parts of H that change only when a pair is pushed."""

    middle: Array
    """``(2M, 2M)`` float64, rows and columns by slot (zero for empty slots)."""
    gamma: float
    """``H_0 = gamma I``: the newest pair's, or fixed (1 with ``h0="adam"``)."""


def compact_form(
    xp: Namespace, history: CurvatureHistory, gamma: float | None = None
) -> CompactForm:
    """Build the middle matrix from the Gram matrices the history keeps up to date;
    ``gamma=None`` takes ``s^T y_hat / y_hat^T y_hat`` of the newest pair (Algorithm 2), a
    number fixes ``H_0 = gamma I`` (1.0 where the pairs are scaled by a diagonal H_0)."""
    capacity, m = history.capacity, len(history)
    on = device(history.s_dot_y)
    slots = xp.asarray(history.order, dtype=xp.int64, device=on)
    s_dot_y = xp.take(xp.take(history.s_dot_y, slots, axis=0), slots, axis=1)
    y_dot_y = xp.take(xp.take(history.y_dot_y, slots, axis=0), slots, axis=1)
    if gamma is None:
        newest = history.order[-1]
        gamma = float(history.s_dot_y[newest, newest]) / float(history.y_dot_y[newest, newest])

    r = xp.triu(s_dot_y)
    d = xp.tril(r)  # the diagonal of S^T Y, as a matrix
    r_inv = xp.linalg.inv(r)
    top_left = r_inv.T @ (d + gamma * y_dot_y) @ r_inv
    zeros = xp.zeros((m, m), dtype=xp.float64, device=on)
    middle = xp.concat(
        [
            xp.concat([top_left, -gamma * r_inv.T], axis=1),
            xp.concat([-gamma * r_inv, zeros], axis=1),
        ],
        axis=0,
    )
    # Scatter chronological rows/columns to slot positions so a step needs no reordering.
    rows = xp.concat([slots, slots + capacity])
    positions = xp.arange(2 * capacity, dtype=xp.int64, device=on)
    placement = xp.astype(positions[:, None] == rows[None, :], xp.float64)
    return CompactForm(middle=placement @ middle @ placement.T, gamma=gamma)


def precondition(
    history: CurvatureHistory, form: CompactForm, g: Array, projection: Array, kernels: Kernels
) -> Array:
    """``H g``, given ``projection = history.pairs @ g`` (the first of the two products,
    of the rows as stored)."""
    xp = kernels.xp
    projection = xp.astype(projection, xp.float64)
    if history.scales is not None:  # rows are stored divided by their scales
        projection = projection * history.scales
    coefficients = xp.matmul(form.middle, projection)
    if history.scales is not None:
        coefficients = coefficients * history.scales
    # Back to the parameters' dtype (float32 for half precision, whose range the
    # coefficients may exceed) before touching the history: a float64 vector times a
    # float32 buffer would silently make a float64 copy of the whole buffer.
    narrow = xp.astype(coefficients, wide_dtype(xp, g.dtype))
    return kernels.combine(history.pairs, narrow, form.gamma, g)
