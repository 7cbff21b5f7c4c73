"""The classic two-loop recursion (Algorithm 2): the readable reference for ``H g``.

The optimizer's step uses the compact form (``preconditioner.py``), which computes the
same product with two matrix-vector products; this loop issues 4m dependent vector
operations and is kept as the reference the tests compare against.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .types import Array


def two_loop(g: Array, s_hist: Array, y_hist: Array, gamma: float | None = None) -> Array:
    """Return ``H g`` for the pairs in the rows of ``s_hist`` and ``y_hist`` (oldest first).

    ``H_0 = gamma I``; ``gamma=None`` takes the newest pair's ``s^T y / y^T y``
    (Algorithm 2, line 8) and ``gamma=1.0`` gives the plain recursion with ``H_0 = I``.
    """
    xp = array_namespace(g, s_hist, y_hist)
    if s_hist.ndim != 2 or s_hist.shape != y_hist.shape or s_hist.shape[1:] != g.shape:
        raise ValueError(
            "two_loop: s_hist and y_hist must both have shape (m, n) with n = g.shape[0], "
            f"got {tuple(s_hist.shape)}, {tuple(y_hist.shape)} and g {tuple(g.shape)}"
        )
    m = s_hist.shape[0]
    if m == 0:
        return g * (1.0 if gamma is None else gamma)
    s = [s_hist[i, :] for i in range(m)]
    y = [y_hist[i, :] for i in range(m)]
    rho = [1.0 / xp.vecdot(s[i], y[i]) for i in range(m)]  # lines 1-3

    q = xp.asarray(g, copy=True)
    alpha: list[Array] = [None] * m  # filled newest first
    for i in reversed(range(m)):  # lines 4-7, newest pair first
        alpha[i] = rho[i] * xp.vecdot(s[i], q)
        q = q - alpha[i] * y[i]

    if gamma is None:  # line 8: H_0 = gamma I from the newest pair
        gamma = xp.vecdot(s[-1], y[-1]) / xp.vecdot(y[-1], y[-1])
    r = gamma * q
    for i in range(m):  # lines 9-12, oldest pair first
        beta = rho[i] * xp.vecdot(y[i], r)
        r = r + (alpha[i] - beta) * s[i]
    return r
