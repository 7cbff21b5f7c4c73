"""Adam's step as L-BFGS's initial matrix (``h0="adam"``).

Algorithm 2 starts from ``H_0 = gamma I``: with M pairs in a space of n >> M dimensions, H g
is mostly ``gamma g``, one step length for every coordinate, and grafting to ``|g|`` then
leaves SGD's step. ``h0="adam"`` starts from Adam's step instead. With k the block's steps
so far and ``beta_1 = momentum``, Adam's moments (Kingma & Ba 2015, Algorithm 1) are

.. math::
    m_k = \\beta_1 m_{k-1} + (1 - \\beta_1)\\, g_k, \\qquad
    v_k = \\beta_2 v_{k-1} + (1 - \\beta_2)\\, g_k \\odot g_k, \\qquad m_0 = v_0 = 0,

    \\hat m = m_k / (1 - \\beta_1^k), \\quad \\hat v = v_k / (1 - \\beta_2^k), \\quad
    H_0 = D = \\operatorname{diag}(1 / (\\sqrt{\\hat v} + \\epsilon)),

and the direction is ``H m^`` (the first moment replaces g, and heavy ball is not applied
after it). L-BFGS refines D with the curvature pairs. It runs as the unchanged compact form
in the coordinates ``x = D^{-1/2} theta`` (Nocedal & Wright, *Numerical Optimization*,
§6.1, scaling): there the direction's input is ``D^{1/2} m^`` and a pair is
``(D^{-1/2} s, D^{1/2} y)``, so

.. math::
    H \\hat m = D^{1/2} \\tilde H D^{1/2} \\hat m

with ``H~`` the L-BFGS matrix of the scaled pairs and ``H~_0 = I`` (D already sets every
coordinate's scale). Without pairs (warm-up) the step is ``D m^``, Adam's, and
``step_norm="gradient"`` grafts ``H m^`` to that length per block. Damping (Eq (7))
measures curvature in the scaled metric (``s^T y`` is unchanged, ``s^T s`` becomes
``s^T D^{-1} s``). Both moments start at zero with Adam's bias correction: started at
``g_1 * g_1`` instead (as Eq (5)'s averages start), v stays dominated by the first,
largest gradients for about ``1 / (1 - beta_2)`` steps, and the steps are then too short
(``benchmarks/rmsprop_plateau.py``). Memory: two n-vectors per block (m takes the
heavy-ball buffer's place, so one more than the default); work: O(n) per step.
"""

from __future__ import annotations

from .config import MLBFGSConfig
from .kernels import Kernels
from .types import Array, Namespace


def update_moment(
    moment: Array | None, value: Array, decay: float, kernels: Kernels, in_place: bool
) -> Array:
    """``moment <- decay * moment + (1 - decay) * value``, in place (the engine) or as a
    new array (the pure step); from zero at the first step (a new array)."""
    if moment is None:
        return (1.0 - decay) * value
    if not in_place:
        return kernels.lerp(moment, value, 1.0 - decay)
    kernels.lerp_(moment, value, 1.0 - decay)
    return moment


def bias_correction(decay: float, steps: int | Array) -> float | Array:
    """``1 - decay^k``: the weight a zero-started moving average has gathered after k steps."""
    return 1.0 - decay**steps


def root_of_delta(xp: Namespace, second_moment: Array, correction: float, eps: float) -> Array:
    """``D^{1/2} = 1 / sqrt(sqrt(v / correction) + eps)``: the scaling of m^ and of y."""
    return 1.0 / xp.sqrt(xp.sqrt(second_moment / correction) + eps)


def delta_root(
    xp: Namespace, second_moment: Array, steps: int | Array, config: MLBFGSConfig
) -> Array:
    """``D^{1/2}`` after ``steps`` updates of v (the block's steps but its skipped ones)."""
    correction = bias_correction(config.adam_beta2, steps)
    return root_of_delta(xp, second_moment, correction, config.adam_eps)


def scaled_input(
    xp: Namespace,
    first_moment: Array,
    second_moment: Array,
    steps: int | Array,
    config: MLBFGSConfig,
) -> tuple[Array, Array]:
    """``(D^{1/2}, D^{1/2} m^)``: H's input where ``H_0`` is the identity, after ``steps``
    updates of the moments."""
    root = delta_root(xp, second_moment, steps, config)
    return root, root * (first_moment / bias_correction(config.momentum, steps))


def fixed_gamma(config: MLBFGSConfig) -> float | None:
    """``H~_0``'s gamma: fixed at 1 over the diagonal ``H_0`` of ``h0="adam"``, which already
    sets every coordinate's scale; ``None``: the newest pair's (Algorithm 2)."""
    return 1.0 if config.h0 == "adam" else None


def unit_metric_pair(s: Array, y: Array, root: Array) -> tuple[Array, Array]:
    """A pair in the coordinates where ``H_0`` is the identity: ``(D^{-1/2} s, D^{1/2} y)``."""
    return s / root, y * root
