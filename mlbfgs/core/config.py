"""Hyperparameters of mL-BFGS, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MLBFGSConfig:
    """The paper's hyperparameters (Table 5 defaults); the learning rate lives outside.

    Raises ``ValueError`` naming the argument when a value is out of its range.
    """

    history: int = 10
    """M: number of curvature pairs kept per block."""
    update_every: int = 50
    """T: a curvature pair is formed every T steps (Eq (6))."""
    hessian_momentum: float = 0.999
    """beta of Eq (5)."""
    tau0: float = 0.99
    sigma_low: float = 0.01
    sigma_high: float = 1.5
    damping: bool = True
    """Eq (7); switch off only for ablations."""
    momentum: float = 0.9
    """Heavy-ball momentum on the preconditioned direction."""
    weight_decay: float = 0.0
    """L2 coefficient folded into the gradient before anything else."""
    warmup: int = 100
    """Steps of SGD before preconditioning starts (the paper uses 2T)."""

    def __post_init__(self) -> None:
        _require(_is_count(self.history) and self.history >= 1, "history", self.history, ">= 1")
        _require(
            _is_count(self.update_every) and self.update_every >= 1,
            "update_every",
            self.update_every,
            ">= 1",
        )
        beta = self.hessian_momentum
        _require(_is_real(beta) and 0.0 <= beta < 1.0, "hessian_momentum", beta, "in [0, 1)")
        _require(_is_real(self.tau0) and 0.0 < self.tau0 <= 1.0, "tau0", self.tau0, "in (0, 1]")
        low, high = self.sigma_low, self.sigma_high
        _require(_is_real(low) and 0.0 <= low < 1.0, "sigma_low", low, "in [0, 1)")
        _require(_is_real(high) and high > 1.0, "sigma_high", high, "> 1")
        _require(isinstance(self.damping, bool), "damping", self.damping, "a bool")
        _require(
            _is_real(self.momentum) and 0.0 <= self.momentum < 1.0,
            "momentum",
            self.momentum,
            "in [0, 1)",
        )
        _require(
            _is_real(self.weight_decay) and self.weight_decay >= 0.0,
            "weight_decay",
            self.weight_decay,
            "a finite number >= 0",
        )
        _require(_is_count(self.warmup) and self.warmup >= 0, "warmup", self.warmup, ">= 0")
