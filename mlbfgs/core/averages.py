"""Momentum averages of parameters and gradients, Eq (5).

.. math::
    M_{\\theta_t} = \\beta M_{\\theta_{t-1}} + (1-\\beta)\\,\\theta_t, \\qquad
    M_{g_t} = \\beta M_{g_{t-1}} + (1-\\beta)\\,g_t

At the first step the averages start at theta_1 and g_1 (Algorithm 1, line 1), so they
carry no zero-start bias and need no correction. The released code keeps unnormalised
sums instead, ``M <- beta M + x`` (``averaging="sum"``); Eq (6) then differences sums.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Averaging
from .kernels import Kernels
from .types import Array, Namespace


@dataclass
class MomentumAverages:
    """M_theta and M_g of one block, plus their snapshot from the last curvature boundary."""

    theta: Array
    grad: Array
    snapshot_theta: Array | None = None
    snapshot_grad: Array | None = None

    @classmethod
    def start(cls, xp: Namespace, theta: Array, g: Array) -> MomentumAverages:
        """Algorithm 1, line 1: M_theta = theta_1, M_g = g_1."""
        return cls(theta=xp.asarray(theta, copy=True), grad=xp.asarray(g, copy=True))

    def update(
        self, theta: Array, g: Array, beta: float, kernels: Kernels, averaging: Averaging = "mean"
    ) -> None:
        """Eq (5) (or the released sums), in place."""
        update_averages(kernels, (self.theta, self.grad), (theta, g), beta, averaging, True)

    def take_snapshot(self, xp: Namespace) -> None:
        """Remember M_theta and M_g at a curvature boundary t = kT for Eq (6) at t + T."""
        if self.snapshot_theta is None or self.snapshot_grad is None:
            self.snapshot_theta = xp.asarray(self.theta, copy=True)
            self.snapshot_grad = xp.asarray(self.grad, copy=True)
        else:
            self.snapshot_theta[...] = self.theta
            self.snapshot_grad[...] = self.grad


def update_averages(
    kernels: Kernels,
    averages: tuple[Array, Array],
    values: tuple[Array, Array],
    beta: float,
    averaging: Averaging,
    in_place: bool,
) -> tuple[Array, Array]:
    """Eq (5) (or the released sums) for ``(M_theta, M_g)`` and ``(theta_t, g_t)``: in
    place through the backend's fused kernels (the engine), or as new arrays (the pure
    step, ``functional.py``)."""
    if averaging == "mean":
        if in_place:
            kernels.lerp_all_(averages, values, 1.0 - beta)
            return averages
        theta, grad = (
            kernels.lerp(a, x, 1.0 - beta) for a, x in zip(averages, values, strict=True)
        )
        return theta, grad
    if in_place:
        kernels.accumulate_all_(averages, values, beta)
        return averages
    theta, grad = (a * beta + x for a, x in zip(averages, values, strict=True))
    return theta, grad


def stalled_share(
    xp: Namespace,
    s: Array,
    average_theta: Array,
    theta: Array,
    beta: float,
    averaging: Averaging,
    dtype: object,
) -> Array:
    """The share of entries of M_theta that did not move over the last T steps (``s == 0``
    in Eq (6)) although theta_t is not at the average's fixed point, so that Eq (5) in
    exact arithmetic would have moved them: the increment ``(1 - beta) * (theta - M)`` was
    rounded away. A 0-d array of ``dtype``; 0 for an empty block.

    Near 0 in float32; most of a bfloat16 average (``core/kernels.py``, ``state_dtype``).
    A stalled average makes s of Eq (6) rounding, and the pairs with it, while the pairs'
    statistics look healthy."""
    # The fixed point of Eq (5) is theta itself; of the released sums, theta / (1 - beta).
    target = average_theta if averaging == "mean" else (1.0 - beta) * average_theta
    stalled = xp.astype((s == 0) & (theta != target), dtype)
    n = int(s.shape[0])
    return xp.sum(stalled) / n if n else xp.sum(stalled)
