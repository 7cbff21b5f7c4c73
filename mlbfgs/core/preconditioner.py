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
    slots = xp.asarray(history.order, dtype=xp.int64, device=device(history.s_dot_y))
    if gamma is None:
        gamma = float(newest_gamma(history.s_dot_y, history.y_dot_y, history.order[-1]))
    return CompactForm(middle_matrix(xp, history.s_dot_y, history.y_dot_y, slots, gamma), gamma)


def newest_gamma(s_dot_y: Array, y_dot_y: Array, newest: int | Array) -> Array:
    """Algorithm 2's ``gamma = s^T y_hat / y_hat^T y_hat`` of the pair in slot ``newest``."""
    return s_dot_y[newest, newest] / y_dot_y[newest, newest]


def middle_matrix(
    xp: Namespace,
    s_dot_y: Array,
    y_dot_y: Array,
    slots: Array,
    gamma: float | Array,
    valid: Array | None = None,
) -> Array:
    """The ``(2M, 2M)`` middle matrix, rows and columns by slot, from the slot-indexed Gram
    matrices and the occupied ``slots`` oldest first.

    ``valid`` (a boolean mask over ``slots``, true on a prefix) lets a fixed-size caller
    (``core/functional.py``) pass every slot, the unoccupied ones last: they get an identity
    diagonal in R, so that R stays invertible, and zero rows and columns in the result.
    """
    capacity, m = int(s_dot_y.shape[0]), int(slots.shape[0])
    on = device(s_dot_y)
    s_y = xp.take(xp.take(s_dot_y, slots, axis=0), slots, axis=1)
    y_y = xp.take(xp.take(y_dot_y, slots, axis=0), slots, axis=1)
    both = None
    if valid is not None:
        both = valid[:, None] & valid[None, :]
        eye = xp.eye(m, dtype=s_y.dtype, device=on)
        s_y, y_y = xp.where(both, s_y, eye), xp.where(both, y_y, xp.zeros_like(y_y))
    r = xp.triu(s_y)
    d = xp.tril(r)  # the diagonal of S^T Y, as a matrix
    r_inv = xp.linalg.inv(r)
    top_left = r_inv.T @ (d + gamma * y_y) @ r_inv
    if both is not None:
        zero = xp.zeros_like(r_inv)
        top_left, r_inv = xp.where(both, top_left, zero), xp.where(both, r_inv, zero)
    middle = xp.concat(
        [
            xp.concat([top_left, -gamma * r_inv.T], axis=1),
            xp.concat([-gamma * r_inv, xp.zeros((m, m), dtype=r_inv.dtype, device=on)], axis=1),
        ],
        axis=0,
    )
    # Scatter chronological rows/columns to slot positions so a step needs no reordering.
    rows = xp.concat([slots, slots + capacity])
    positions = xp.arange(2 * capacity, dtype=slots.dtype, device=on)
    placement = xp.astype(positions[:, None] == rows[None, :], middle.dtype)
    return placement @ middle @ placement.T


def precondition(
    history: CurvatureHistory, form: CompactForm, g: Array, projection: Array, kernels: Kernels
) -> Array:
    """``H g``, given ``projection = history.pairs @ g`` (the first of the two products,
    of the rows as stored)."""
    return apply_compact_form(
        history.pairs, history.scales, form.middle, form.gamma, g, projection, kernels
    )


def apply_compact_form(
    pairs: Array,
    scales: Array | None,
    middle: Array,
    gamma: float | Array,
    g: Array,
    projection: Array,
    kernels: Kernels,
) -> Array:
    """``H g = gamma g + pairs^T (middle (pairs @ g))``, given ``projection = pairs @ g``
    (of the rows as stored, divided by ``scales`` when present)."""
    xp = kernels.xp
    projection = xp.astype(projection, middle.dtype)
    if scales is not None:  # rows are stored divided by their scales
        projection = projection * scales
    coefficients = xp.matmul(middle, projection)
    if scales is not None:
        coefficients = coefficients * scales
    # Back to the parameters' dtype (float32 for half precision, whose range the
    # coefficients may exceed) before touching the history: a float64 vector times a
    # float32 buffer would silently make a float64 copy of the whole buffer.
    narrow = xp.astype(coefficients, wide_dtype(xp, g.dtype))
    return kernels.combine(pairs, narrow, gamma, g)
