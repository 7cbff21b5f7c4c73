"""The few O(n) element-wise and matrix-vector operations on the step's hot path.

The core calls these through a :class:`Kernels` object so that a backend can replace any
of them with a fused fast path (``mlbfgs.backends``) while this generic version, written
only against the array API standard, stays the reference every fast path is tested
against.

Inner products of half-precision vectors (float16, bfloat16) accumulate and return in
float32: float16 overflows at 65504 and underflows below 6e-8, so ``g^T g`` of a hundred
entries of 30, or ``s^T y`` of two small differences, would otherwise become inf or 0 and
skip a finite step, reject a good pair, or put a zero on the diagonal of a Gram matrix.
The same wide path serves a half-precision history (``history_dtype``) next to float32 or
float64 vectors: products accumulate in the wider of float32 and the vectors' dtype. The
arrays are converted in slices small enough to stay in cache, so the extra memory stays
bounded and each stored element is read from memory once (``_SLICE``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from array_api_compat import device

from .types import Array, Namespace

T = TypeVar("T")

_SLICE = 1 << 20
"""Elements converted at a time by the half-precision products (4 MiB of float32)."""


def is_half(xp: Namespace, dtype: object) -> bool:
    """Whether ``dtype`` has fewer than 32 bits (float16, bfloat16)."""
    return int(xp.finfo(dtype).bits) < 32


def wide_dtype(xp: Namespace, *dtypes: object) -> object:
    """Where products of arrays of ``dtypes`` accumulate: float64 if one is, else float32
    (so float32 for half precision)."""
    return xp.float64 if any(d == xp.float64 for d in dtypes) else xp.float32


def state_dtype(xp: Namespace, dtype: object) -> object:
    """Where a block's optimizer state lives and its step is computed, for parameters of
    ``dtype``: float32 and float64 keep their own; half precision (float16, bfloat16)
    gets float32.

    Eq (5) with beta = 0.999 adds ``(1 - beta) * (theta - M)`` per step, which is below
    half a unit in the last place of a bfloat16 ``M`` (2^-9 to 2^-8 of ``|M|``) unless
    ``|theta - M|`` exceeds two to four times ``|M|``: most entries of a bfloat16 average
    never move (68.8% after 120 steps of a digits MLP, issue 19) and s of Eq (6) is
    mostly rounding. The
    averages, the heavy-ball buffer and the pairs (unless ``history_dtype`` asks for 16
    bits) are therefore float32, and the parameters are rounded once per step, from the
    float32 ``theta - lr * d`` (Eq (2)).
    """
    return xp.float32 if is_half(xp, dtype) else dtype


class Kernels:
    """Generic array-API implementations of the hot-path operations."""

    def __init__(self, xp: Namespace) -> None:
        self.xp = xp
        self._half: dict[object, bool] = {}

    def half(self, dtype: object) -> bool:
        """:func:`is_half`, remembered per dtype (the check runs on the hot path)."""
        known = self._half.get(dtype)
        if known is None:
            known = self._half[dtype] = is_half(self.xp, dtype)
        return known

    def lerp_(self, average: Array, x: Array, weight: float) -> None:
        """In place: ``average <- (1 - weight) * average + weight * x``."""
        average *= 1.0 - weight
        average += weight * x

    def lerp(self, average: Array, x: Array, weight: float) -> Array:
        """:meth:`lerp_` as a new array, rounded as the generic :meth:`lerp_` rounds it (a
        backend's fused in-place form may round otherwise; the pure step uses this one)."""
        return average * (1.0 - weight) + weight * x

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

    def mixed(self, pairs: Array, g: Array) -> bool:
        """Whether products of ``pairs`` and ``g`` take the wide path: either is half
        precision, or the two dtypes differ."""
        return self.half(pairs.dtype) or self.half(g.dtype) or pairs.dtype != g.dtype

    def project(self, pairs: Array, g: Array) -> Array:
        """``pairs @ g``: the 2M inner products of g with every stored s and y_hat
        (accumulated and returned in :func:`wide_dtype` for half or mixed arrays)."""
        if self.mixed(pairs, g):
            return self._project_wide(pairs, g)
        return self.xp.matmul(pairs, g)

    def _project_wide(self, pairs: Array, g: Array) -> Array:
        """``pairs @ g`` accumulated wide, converting a slice of columns at a time."""
        xp = self.xp
        wide = wide_dtype(xp, pairs.dtype, g.dtype)
        total = None
        for part in _slices(pairs, g):
            product = xp.matmul(
                xp.astype(pairs[:, part], wide, copy=False), xp.astype(g[part], wide, copy=False)
            )
            total = product if total is None else total + product
        return total

    def combine(self, pairs: Array, coefficients: Array, gamma: float, g: Array) -> Array:
        """``gamma * g + pairs^T @ coefficients``: the second product of the compact form,
        in g's dtype.

        Half-precision or mixed arrays take ``coefficients`` in :func:`wide_dtype` (they
        may exceed the half range) and form the sum there, one slice at a time.
        """
        if self.mixed(pairs, g):
            return self._combine_wide(pairs, coefficients, gamma, g)
        out = self.xp.matmul(coefficients, pairs)
        out += gamma * g
        return out

    def _combine_wide(self, pairs: Array, coefficients: Array, gamma: float, g: Array) -> Array:
        xp = self.xp
        wide = wide_dtype(xp, pairs.dtype, g.dtype)
        c = xp.astype(coefficients, wide, copy=False)
        out = xp.empty_like(g)
        for part in _slices(pairs, g):
            total = xp.matmul(c, xp.astype(pairs[:, part], wide, copy=False))
            total += gamma * xp.astype(g[part], wide, copy=False)
            out[part] = xp.astype(total, g.dtype, copy=False)
        return out

    def write_pair_if(
        self,
        predicate: Array,
        pairs: Array,
        slot: Array,
        s: Array,
        y_hat: Array,
        after: Array | None = None,
    ) -> Array:
        """``pairs`` (``(2M, n)``) with rows ``slot`` and ``M + slot`` replaced by ``s`` and
        ``y_hat`` if the 0-d ``predicate`` holds: a new array, the pure step's push
        (``core/pure_pairs.py``). The array API has no functional index update, so this
        generic one copies the buffer when the predicate holds; a backend may write the two
        rows (``backends/jax.py``). ``after``: a value computed from ``pairs`` that the
        write must follow; a compiler that writes in place copies the buffer when it cannot
        tell (ignored here)."""

        def write(pairs: Array, s: Array, y_hat: Array) -> Array:
            pairs = set_row(self.xp, pairs, slot, s)
            return set_row(self.xp, pairs, int(pairs.shape[0]) // 2 + slot, y_hat)

        return self.cond(predicate, write, lambda pairs, s, y_hat: pairs, pairs, s, y_hat)

    def cond(
        self,
        predicate: Array,
        if_true: Callable[..., T],
        if_false: Callable[..., T],
        *operands: Array,
    ) -> T:
        """``if_true(*operands)`` if the 0-d boolean ``predicate`` holds, else
        ``if_false(*operands)``: a Python branch here, a traced one where a library
        compiles both (``jax.lax.cond``)."""
        return if_true(*operands) if bool(predicate) else if_false(*operands)

    @property
    def gram_dtype(self) -> object:
        """Where the Gram matrices and the compact form's small algebra are kept: float64,
        unless the library has none enabled (``backends/jax.py``)."""
        return self.xp.float64

    def descend(self, theta: Array, direction: Array, lr: float) -> Array:
        """``theta - lr * direction`` as a new array (Eq (2))."""
        return theta - lr * direction

    def dot(self, x: Array, y: Array) -> Array:
        """``x^T y`` of two vectors as a 0-d array (non-finite if either holds NaN or inf;
        wide for half-precision or mixed vectors, as :meth:`project`)."""
        if self.mixed(x, y):
            return self._project_wide(self.xp.reshape(x, (1, -1)), y)[0]
        return self.xp.vecdot(x, y)


def set_row(xp: Namespace, matrix: Array, row: Array, vector: Array) -> Array:
    """A new ``matrix`` with row ``row`` (a 0-d integer array) replaced by ``vector``: the
    array API has no functional index update, so a ``where`` over the whole matrix."""
    rows = xp.arange(int(matrix.shape[0]), dtype=row.dtype, device=device(matrix))
    return xp.where((rows == row)[:, None], vector[None, :], matrix)


def _slices(pairs: Array, g: Array) -> list[slice]:
    """Column slices of ``pairs`` of at most ``_SLICE`` elements each (at least one)."""
    n, rows = int(g.shape[0]), max(1, int(pairs.shape[0]))
    width = max(1, _SLICE // rows)
    return [slice(start, start + width) for start in range(0, max(n, 1), width)]
