"""Step control beyond the paper (design §3.7): the length of the preconditioned step.

Algorithm 1 as written steps by ``lr * H g``. With stochastic curvature pairs the scale
of H can drift far from the loss's curvature (gamma = s^T y_hat / y_hat^T y_hat grows when
damping lifts a flat pair to ``sigma_low``), and the step then diverges at learning rates
where SGD is stable. Three remedies rescale ``d = H g`` before heavy ball, keeping its
direction:

.. math::
    \\text{gradient:}\\quad d_b \\leftarrow d_b \\frac{\\lVert g_b\\rVert}{\\lVert d_b\\rVert}
    \\qquad
    \\text{trust:}\\quad d_b \\leftarrow d_b
        \\min\\left(1, \\frac{\\lVert g_b\\rVert}{\\lVert d_b\\rVert}\\right)
    \\qquad
    \\text{unit:}\\quad d_b \\leftarrow \\frac{d_b}{\\sqrt{\\sum_c \\lVert d_c\\rVert^2}}

"gradient" (grafting) gives every block the length of its own gradient, so ``lr`` means
what it means for SGD, in warm-up and after; it needs nothing from other blocks. It also
lengthens a step that H shortened, and so gives back what H's own scale (gamma) bought:
on a noisy diagonal quadratic, ``|H g| / |g|`` stays near 0.43 and grafting multiplies the
step by 2.3 (docs/results.md). "trust" only shortens: a step longer than the gradient is
cut to its length, a shorter one is kept, so it is never longer than grafting's and equals
the paper's step wherever H does not lengthen it. "unit"
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
    ``grad_squares[i]`` its ``g^T g``, needed for ``"gradient"`` and ``"trust"`` (the orchestrator's
    finiteness probe includes it, so that a gradient norm that overflows skips the block).
    With ``"unit"`` every rank must call this once per step (``sum_over_blocks`` is a
    collective), whether or not it owns preconditioned blocks.
    """
    if step_norm == "none":
        return [None] * len(blocks)
    squares = [None if d is None else kernels.dot(d, d) for d in directions]
    if needs_gradient_norm(step_norm):
        if any(
            gg is None and d is not None for gg, d in zip(grad_squares, directions, strict=True)
        ):
            raise ValueError(f"step_norm={step_norm!r} needs g^T g of every preconditioned block")
        return [
            None if d is None else _root_ratio(kernels, gg, dd, d, at_most_one=step_norm == "trust")
            for gg, dd, d in zip(grad_squares, squares, directions, strict=True)
        ]
    total = sum_over_blocks(
        {b: dd for b, dd in zip(blocks, squares, strict=True) if dd is not None}
    )
    return [
        None if d is None else _root_ratio(kernels, kernels.xp.ones_like(total), total, d)
        for d in directions
    ]


def needs_gradient_norm(step_norm: StepNorm) -> bool:
    """Whether the step control measures each block's ``|g|`` ("gradient", "trust")."""
    return step_norm in ("gradient", "trust")


def _root_ratio(
    kernels: Kernels, numerator: Array, denominator: Array, like: Array, at_most_one: bool = False
) -> Array:
    """``sqrt(numerator / denominator)`` (0 where the denominator is 0), capped at 1 if
    ``at_most_one``, in ``like``'s dtype.

    A zero denominator means a zero direction, which any factor leaves at zero.
    """
    xp = kernels.xp
    positive = denominator > 0
    safe = xp.where(positive, denominator, xp.ones_like(denominator))
    ratio = xp.astype(numerator, safe.dtype) / safe
    if at_most_one:
        ratio = xp.minimum(ratio, xp.ones_like(ratio))
    return xp.astype(xp.where(positive, xp.sqrt(ratio), xp.zeros_like(ratio)), like.dtype)
