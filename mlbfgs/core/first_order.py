"""The first-order pieces around the quasi-Newton direction (docs/design.md section 3).

Weight decay enters the gradient before anything else, so curvature pairs describe the
regularised loss; the SGD warm-up covers the steps before a pair exists (Algorithm 1,
lines 7-8); heavy-ball momentum smooths the resulting direction, as in the paper's
training setup (Table 5, momentum 0.9).
"""

from __future__ import annotations

from .kernels import Kernels
from .types import Array


def apply_weight_decay(g: Array, theta: Array, weight_decay: float) -> Array:
    """L2 regularisation: ``g + weight_decay * theta`` (``g`` itself when it is zero)."""
    if weight_decay == 0.0:
        return g
    return g + weight_decay * theta


def in_warmup(t: int | Array, warmup: int, pairs_stored: int | Array) -> bool | Array:
    """Algorithm 1, line 7: plain SGD while ``t <= warmup`` or no pair exists yet (a bool,
    or a boolean array for array arguments)."""
    return (t <= warmup) | (pairs_stored == 0)


def heavy_ball(
    buffer: Array | None, direction: Array, momentum: float, kernels: Kernels, in_place: bool
) -> Array:
    """``buf <- d`` the first time, then ``buf <- momentum * buf + d``; returns buf.

    The returned array is the (possibly new) buffer, written in place (the engine) or a
    new array (the pure step, whose buffer starts at zero); with ``momentum == 0`` it is
    the direction itself and no buffer is kept.
    """
    if momentum == 0.0:
        return direction
    if buffer is None:
        return kernels.xp.asarray(direction, copy=True)
    if not in_place:
        return buffer * momentum + direction
    kernels.heavy_ball_(buffer, direction, momentum)
    return buffer
