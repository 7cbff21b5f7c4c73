"""Hyperparameters of mL-BFGS, validated once at construction, and the named presets."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypedDict, TypeGuard, get_args

StepNorm = Literal["none", "gradient", "trust", "unit"]
"""How the preconditioned direction ``H g`` is rescaled before heavy ball (design §3.7)."""
Averaging = Literal["mean", "sum"]
"""Eq (5) as written (``"mean"``) or the released code's unnormalised sums (``"sum"``)."""
PairTiming = Literal["after_step", "before_step"]
"""When a curvature pair is formed at a boundary: after the update (the paper) or before
the direction, so that it is used in the step it is formed in (the released code)."""
Preset = Literal["paper", "released"]
HistoryDtype = Literal["float32", "float16", "bfloat16"]
"""Storage of the curvature pairs when it should differ from the parameters' dtype."""
InitialMatrix = Literal["gamma", "adam"]
"""``H_0`` of Algorithm 2: ``gamma I`` (the paper) or Adam's ``diag(1 / (sqrt(v^) + eps))``,
applied to Adam's first moment (``core/initial_matrix.py``)."""


class Hyperparameters(TypedDict, total=False):
    """:class:`MLBFGSConfig`'s fields as keyword arguments of both constructors
    (``mlbfgs.MLBFGS``, ``mlbfgs.torch.MLBFGS``), so that an option is declared here only.

    An absent or ``None`` value takes the preset's value, else the field's default; the
    fields' docstrings say what each means. ``tests/core/test_config.py`` keeps the keys
    equal to the fields.
    """

    history_size: int | None
    update_every: int | None
    hessian_momentum: float | None
    tau0: float | None
    sigma_low: float | None
    sigma_high: float | None
    damping: bool | None
    momentum: float | None
    weight_decay: float | None
    warmup: int | None
    step_norm: StepNorm | None
    pair_momentum: float | None
    averaging: Averaging | None
    restart_grad_average: bool | None
    pair_timing: PairTiming | None
    h0: InitialMatrix | None
    adam_beta2: float | None
    adam_eps: float | None
    history_dtype: HistoryDtype | None


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
    """The paper's hyperparameters (Table 5 defaults) and the step control beyond it.

    The learning rate lives outside. Raises ``ValueError`` naming the argument when a value
    is out of its range. NumPy scalars are accepted and stored as Python ``int`` / ``float``.
    """

    history_size: int = 10
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
    """Heavy-ball momentum on the (rescaled) preconditioned direction; with ``h0="adam"``,
    beta_1 of Adam's first moment, which the direction preconditions instead of g."""
    weight_decay: float = 0.0
    """L2 coefficient folded into the gradient before anything else."""
    warmup: int | None = None
    """Steps of SGD before preconditioning starts; ``None``: until the first pair is used
    (2T steps, or 2T - 1 with ``pair_timing="before_step"``)."""
    step_norm: StepNorm = "gradient"
    """``"none"``: ``d = H g`` as in the paper. ``"gradient"``: each block's ``H g`` is
    rescaled to the norm of that block's gradient (grafting: H gives the direction, SGD the
    length, so ``lr`` means the same in warm-up and after). ``"trust"``: only a block's
    ``H g`` longer than its gradient is shortened to the gradient's norm. ``"unit"``:
    ``H g`` divided by its norm over all blocks and ranks (the released code)."""
    pair_momentum: float = 0.0
    """m of the released code's "double momentum": ``s <- (1-m) s + m s_prev`` and
    ``y <- (1-m) y + m y_hat_prev`` (the newest stored pair) before damping."""
    averaging: Averaging = "mean"
    """``"mean"``: Eq (5). ``"sum"``: ``M <- beta M + x`` (the released code)."""
    restart_grad_average: bool = False
    """After each boundary's snapshot, restart ``M_g`` from the current gradient (the
    released code; ``M_theta`` is not restarted)."""
    pair_timing: PairTiming = "after_step"
    """See :data:`PairTiming`."""
    h0: InitialMatrix = "gamma"
    """``"gamma"``: ``H_0 = gamma I`` (Algorithm 2). ``"adam"``: H preconditions Adam's first
    moment m^ from ``H_0 = diag(1 / (sqrt(v^) + adam_eps))``, Adam's second moment, so that
    without pairs the step is Adam's and the pairs refine it; one more n-vector per block
    (``core/initial_matrix.py``)."""
    adam_beta2: float = 0.999
    """beta_2 of ``v <- beta_2 v + (1 - beta_2) g * g`` (``h0="adam"``)."""
    adam_eps: float = 1e-8
    """eps of ``D = diag(1 / (sqrt(v^) + eps))`` (``h0="adam"``)."""
    history_dtype: HistoryDtype | None = None
    """Storage of the ``(2M, n)`` pairs; ``None``: the dtype of the rest of the state, the
    parameters' own for float32 and float64 and float32 for half-precision parameters
    (``core/kernels.py``, ``state_dtype``). In half precision
    (``"float16"``, ``"bfloat16"``) each stored row is scaled by a power of two and every
    product is accumulated in float32 or wider; the Gram matrices and the compact form's
    2M x 2M algebra stay float64 (``core/history.py``)."""

    def __post_init__(self) -> None:
        self._count("history_size", minimum=1)
        self._count("update_every", minimum=1)
        if self.warmup is not None:
            self._count("warmup", minimum=0)
        self._real("hessian_momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("tau0", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        self._real("sigma_low", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("sigma_high", lambda v: v > 1.0, "> 1")
        self._flag("damping")
        self._real("momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("weight_decay", lambda v: v >= 0.0, "a finite number >= 0")
        self._choice("step_norm", StepNorm)
        self._real("pair_momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._choice("averaging", Averaging)
        self._flag("restart_grad_average")
        self._choice("pair_timing", PairTiming)
        self._choice("h0", InitialMatrix)
        self._real("adam_beta2", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self._real("adam_eps", lambda v: v > 0.0, "> 0")
        if self.history_dtype is not None:
            self._choice("history_dtype", HistoryDtype)

    @classmethod
    def from_preset(cls, preset: str | None = None, **given: Any) -> MLBFGSConfig:
        """The configuration of ``preset`` (``None``: the library defaults), overridden by
        every ``given`` value that is not ``None``."""
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be None, 'paper' or 'released', got {preset!r}")
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown hyperparameters {sorted(unknown)}")
        chosen = {key: value for key, value in given.items() if value is not None}
        return cls(**{**(PRESETS[preset] if preset else {}), **chosen})

    @property
    def warmup_steps(self) -> int:
        """``warmup``, with ``None`` resolved to the step before the first pair is used."""
        if self.warmup is not None:
            return self.warmup
        return 2 * self.update_every - (self.pair_timing == "before_step")

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

    def _flag(self, name: str) -> None:
        if not isinstance(getattr(self, name), bool):
            raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def _choice(self, name: str, options: Any) -> None:
        allowed = get_args(options)
        if getattr(self, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


PRESETS: Mapping[str, Mapping[str, object]] = {
    # Algorithm 1 exactly as the paper writes it.
    "paper": {
        "step_norm": "none",
        "pair_momentum": 0.0,
        "averaging": "mean",
        "restart_grad_average": False,
        "pair_timing": "after_step",
        "h0": "gamma",
    },
    # The authors' released optimizer (BlockSlimQN), step for step, except that weight
    # decay enters the gradient average as wd * theta (the released code adds wd * g).
    "released": {
        "step_norm": "unit",
        "pair_momentum": 0.9,
        "averaging": "sum",
        "restart_grad_average": True,
        "pair_timing": "before_step",
        "h0": "gamma",
    },
}
"""Named sets of step-control values; any explicitly given value overrides them."""
