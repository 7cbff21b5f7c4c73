"""Hyperparameters of mL-BFGS, validated once at construction."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard


def is_real(value: object) -> TypeGuard[numbers.Real]:
    """A finite real number (Python or NumPy scalar), not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def is_count(value: object) -> TypeGuard[numbers.Integral]:
    """An integer (Python or NumPy scalar), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class MLBFGSConfig:
    """The paper's hyperparameters (Table 5 defaults); the learning rate lives outside.

    Raises ``ValueError`` naming the argument when a value is out of its range. NumPy
    scalars are accepted and stored as Python ``int`` / ``float``.
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
    warmup: int | None = None
    """Steps of SGD before preconditioning starts; ``None`` means 2T, as in the paper."""

    def __post_init__(self) -> None:
        self._count("history", minimum=1)
        self._count("update_every", minimum=1)
        if self.warmup is not None:
            self._count("warmup", minimum=0)
        self._real("hessian_momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("tau0", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        self._real("sigma_low", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("sigma_high", lambda v: v > 1.0, "> 1")
        if not isinstance(self.damping, bool):
            raise ValueError(f"damping must be a bool, got {self.damping!r}")
        self._real("momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("weight_decay", lambda v: v >= 0.0, "a finite number >= 0")

    @property
    def warmup_steps(self) -> int:
        """``warmup``, with ``None`` resolved to 2T."""
        return 2 * self.update_every if self.warmup is None else self.warmup

    def _count(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if not is_count(value) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        object.__setattr__(self, name, int(value))

    def _real(self, name: str, ok: Callable[[float], bool], rule: str) -> None:
        value = getattr(self, name)
        if not is_real(value) or not ok(float(value)):
            raise ValueError(f"{name} must be {rule}, got {value!r}")
        object.__setattr__(self, name, float(value))
