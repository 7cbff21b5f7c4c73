"""A diagonal initial matrix ``H_0`` from the gradient's RMS (``h0="rms"``).

Algorithm 2 starts from ``H_0 = gamma I``: with M pairs in a space of n >> M dimensions, H g
is mostly ``gamma g``, one step length for every coordinate. Adam's second moment gives
each coordinate its own:

.. math::
    v_t = \\beta_2 v_{t-1} + (1 - \\beta_2)\\, g_t \\odot g_t, \\qquad
    H_0 = D = \\operatorname{diag}(\\delta), \\quad \\delta = 1 / (\\sqrt{v_t} + \\epsilon)

and L-BFGS refines D with the curvature pairs. It runs as the unchanged compact form in the
coordinates ``x = D^{-1/2} theta`` (Nocedal & Wright, *Numerical Optimization*, §6.1,
scaling): there the gradient is ``D^{1/2} g`` and a pair is ``(D^{-1/2} s, D^{1/2} y)``, so

.. math::
    H g = D^{1/2} \\tilde H D^{1/2} g

with ``H~`` the L-BFGS matrix of the scaled pairs and ``H~_0 = I`` (not the newest pair's
gamma: D already sets every coordinate's scale); for a fixed D this is exactly L-BFGS with
``H_0 = D``. Damping (Eq (7)) then measures curvature in the scaled
metric (``s^T y`` is unchanged, ``s^T s`` becomes ``s^T D^{-1} s``). v moves slowly
(beta_2 = 0.999), and each pair keeps the scaling of the boundary that formed it. Like
Eq (5)'s averages, v starts at ``g_1 * g_1``, with no zero-start bias to correct. Memory: one
n-vector per block; work: O(n) per step.
"""

from __future__ import annotations

from .kernels import Kernels
from .types import Array, Namespace


def update_second_moment(
    second_moment: Array | None, g: Array, decay: float, kernels: Kernels
) -> Array:
    """``v <- decay * v + (1 - decay) * g * g`` in place, or ``g * g`` at the first step."""
    square = g * g
    if second_moment is None:
        return square
    kernels.lerp_(second_moment, square, 1.0 - decay)
    return second_moment


def root_of_delta(xp: Namespace, second_moment: Array, eps: float) -> Array:
    """``D^{1/2} = 1 / sqrt(sqrt(v) + eps)``: the scaling of the gradient and of y."""
    return 1.0 / xp.sqrt(xp.sqrt(second_moment) + eps)
