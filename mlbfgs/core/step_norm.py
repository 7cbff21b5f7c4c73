"""Step control beyond the paper (design §3.7): the length of the preconditioned step.

Algorithm 1 as written steps by ``lr * H g``. With stochastic curvature pairs the scale
of H can drift far from the loss's curvature (gamma = s^T y_hat / y_hat^T y_hat grows when
damping lifts a flat pair to ``sigma_low``), and the step then diverges at learning rates
where SGD is stable. Two remedies rescale ``d = H g`` before heavy ball, keeping its
direction:

.. math::
    \\text{gradient:}\\quad d_b \\leftarrow d_b \\frac{\\lVert g_b\\rVert}{\\lVert d_b\\rVert}
    \\qquad
    \\text{unit:}\\quad d_b \\leftarrow \\frac{d_b}{\\sqrt{\\sum_c \\lVert d_c\\rVert^2}}

"gradient" (grafting) gives every block the length of its own gradient, so ``lr`` means
what it means for SGD, in warm-up and after; it needs nothing from other blocks. "unit"
is the released code's normalisation over all blocks (and ranks): every preconditioned
step has length ``lr`` before heavy ball. Warm-up steps (``d = g``) are never rescaled.
Every scale is a 0-d array on the parameters' device: no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .config import StepNorm
from .kernels import Kernels
from .types import Array

BlockSum = Callable[[Mapping[int, Array]], Array]
"""Sums a value per block over every block of every rank, given this rank's values."""


def direction_scales(
    step_norm: StepNorm,
    blocks: Sequence[int],
    grad_squares: Sequence[Array | None],
    directions: Sequence[Array | None],
    kernels: Kernels,
    sum_over_blocks: BlockSum,
) -> list[Array | None]:
    """The factor for each block's direction; ``None`` where it stays as it is.

    ``directions[i]`` is block ``blocks[i]``'s ``H g``, or ``None`` during its warm-up;
    ``grad_squares[i]`` its ``g^T g``, needed for ``"gradient"`` (the orchestrator's
    finiteness probe includes it, so that a gradient norm that overflows skips the block).
    With ``"unit"`` every rank must call this once per step (``sum_over_blocks`` is a
    collective), whether or not it owns preconditioned blocks.
    """
    if step_norm == "none":
        return [None] * len(blocks)
    squares = [None if d is None else kernels.dot(d, d) for d in directions]
    if step_norm == "gradient":
        if any(
            gg is None and d is not None for gg, d in zip(grad_squares, directions, strict=True)
        ):
            raise ValueError("step_norm='gradient' needs g^T g of every preconditioned block")
        return [
            None if d is None else _root_ratio(kernels, gg, dd, d)
            for gg, dd, d in zip(grad_squares, squares, directions, strict=True)
        ]
    total = sum_over_blocks(
        {b: dd for b, dd in zip(blocks, squares, strict=True) if dd is not None}
    )
    return [
        None if d is None else _root_ratio(kernels, kernels.xp.ones_like(total), total, d)
        for d in directions
    ]


def _root_ratio(kernels: Kernels, numerator: Array, denominator: Array, like: Array) -> Array:
    """``sqrt(numerator / denominator)`` (0 where the denominator is 0), in ``like``'s dtype.

    A zero denominator means a zero direction, which any factor leaves at zero.
    """
    xp = kernels.xp
    positive = denominator > 0
    safe = xp.where(positive, denominator, xp.ones_like(denominator))
    ratio = xp.astype(numerator, safe.dtype) / safe
    return xp.astype(xp.where(positive, xp.sqrt(ratio), xp.zeros_like(ratio)), like.dtype)
