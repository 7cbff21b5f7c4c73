"""``mlbfgs.torch.MLBFGS``: mL-BFGS as a ``torch.optim.Optimizer``.

Each param group gets its own :class:`mlbfgs.MLBFGS` engine, so curvature blocks never
cross groups and every group has its own lr, weight decay and other hyperparameters. The
engine updates the parameters in place through ``p.detach()`` views (no autograd
involvement) and reads ``p.grad``; the group's hyperparameters are read at every step, so
``torch.optim.lr_scheduler`` (which writes ``group["lr"]``) works unchanged.

Missing gradients: a parameter whose ``grad`` is ``None`` contributes a zero gradient to
its block, so ``zero_grad(set_to_none=True)`` and ``zero_grad(set_to_none=False)`` give
bitwise the same trajectory. A param group in which *no* parameter has a gradient is
skipped: nothing of it changes and its step count does not advance. Do not hand frozen
parameters (``requires_grad=False``) to the optimizer inside a group that trains: weight
decay, momentum and the curvature of their block would still move them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from . import optimizer as engine_module
from .comm import Communicator
from .core import MLBFGSConfig
from .core.config import Averaging, PairTiming, Preset, StepNorm
from .guard import exclusive
from .validation import check_lr

__all__ = ["MLBFGS"]

# Group hyperparameters handed to the engine's configuration at every step.
_CONFIG_KEYS = (
    "history",
    "update_every",
    "hessian_momentum",
    "tau0",
    "sigma_low",
    "sigma_high",
    "damping",
    "momentum",
    "weight_decay",
    "warmup",
    "step_norm",
    "pair_momentum",
    "averaging",
    "restart_grad_average",
    "pair_timing",
)
# Fixed once the engine exists: they shape its state.
_STRUCTURAL_KEYS = ("history", "blocks")
_ENGINES_KEY = "mlbfgs_engines"


class MLBFGS(torch.optim.Optimizer):
    """Momentum-based, damped, block-diagonal stochastic L-BFGS for torch models.

    The hyperparameters are those of :class:`mlbfgs.MLBFGS`, ``preset`` included; each
    one except ``comm``, ``average_grads``, ``on_nonfinite`` and ``preset`` may also be set
    per param group (the preset only fills in the defaults). ``blocks`` partitions each
    group's parameters (indices within the group).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        history: int = 10,
        update_every: int = 50,
        hessian_momentum: float = 0.999,
        tau0: float = 0.99,
        sigma_low: float = 0.01,
        sigma_high: float = 1.5,
        damping: bool = True,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup: int | None = None,
        blocks: int | list[list[int]] | None = None,
        comm: Communicator | None = None,
        average_grads: bool = True,
        on_nonfinite: engine_module.NonFinitePolicy = "skip",
        *,
        step_norm: StepNorm | None = None,
        pair_momentum: float | None = None,
        averaging: Averaging | None = None,
        restart_grad_average: bool | None = None,
        pair_timing: PairTiming | None = None,
        preset: Preset | None = None,
    ) -> None:
        if callable(lr) or isinstance(lr, torch.Tensor):
            raise TypeError("lr must be a float; use torch.optim.lr_scheduler for schedules")
        check_lr(lr)
        # The preset fills in the step-control options not given; groups store the result.
        config = MLBFGSConfig.from_preset(
            preset,
            history=history,
            update_every=update_every,
            hessian_momentum=hessian_momentum,
            tau0=tau0,
            sigma_low=sigma_low,
            sigma_high=sigma_high,
            damping=damping,
            momentum=momentum,
            weight_decay=weight_decay,
            warmup=warmup,
            step_norm=step_norm,
            pair_momentum=pair_momentum,
            averaging=averaging,
            restart_grad_average=restart_grad_average,
            pair_timing=pair_timing,
        )
        defaults = {
            "lr": lr,
            **{key: getattr(config, key) for key in _CONFIG_KEYS},
            "blocks": blocks,
        }
        self._comm = comm
        self._average_grads = average_grads
        self._on_nonfinite = on_nonfinite
        self._engines: list[engine_module.MLBFGS] = []
        self._structure: list[dict[str, Any]] = []  # each engine's _STRUCTURAL_KEYS values
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as ``torch.optim.Optimizer`` does) and build its engine."""
        before = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            engine = self._build_engine(group)
        except Exception:
            del self.param_groups[before:]
            raise
        self._engines.append(engine)
        self._structure.append(copy.deepcopy({key: group[key] for key in _STRUCTURAL_KEYS}))

    def _build_engine(self, group: dict[str, Any]) -> engine_module.MLBFGS:
        for i, p in enumerate(group["params"]):
            if not p.is_floating_point():
                raise TypeError(f"param {i} of a group has dtype {p.dtype}; needs floating point")
        return engine_module.MLBFGS(
            [p.detach() for p in group["params"]],
            lr=check_lr(group["lr"]),
            blocks=group["blocks"],
            comm=self._comm,
            average_grads=self._average_grads,
            on_nonfinite=self._on_nonfinite,
            **{key: group[key] for key in _CONFIG_KEYS},
        )

    # -- the step -------------------------------------------------------------------------

    def _engine_inputs(self, index: int) -> tuple[MLBFGSConfig, float, list[torch.Tensor]]:
        """Group ``index``'s current hyperparameters and tensors, checked; changes nothing."""
        group, engine = self.param_groups[index], self._engines[index]
        for key, built in self._structure[index].items():
            if group[key] != built:
                raise ValueError(
                    f"param_groups[{index}][{key!r}] changed from {built!r} to {group[key]!r}; "
                    "it is fixed when the optimizer is built"
                )
        try:
            config = MLBFGSConfig(**{key: group[key] for key in _CONFIG_KEYS})
            lr = check_lr(_as_float(group["lr"]))
            if callable(lr):
                raise TypeError("lr must be a number; use torch.optim.lr_scheduler for schedules")
        except (TypeError, ValueError) as error:
            raise type(error)(f"param_groups[{index}]: {error}") from None
        # Fresh views each step: ``model.to(...)`` may have swapped a parameter's storage.
        views = [p.detach() for p in group["params"]]
        for i, (view, old) in enumerate(zip(views, engine.params, strict=True)):
            if view.device != old.device or view.dtype != old.dtype:
                raise ValueError(
                    f"param_groups[{index}] param {i} moved from {old.dtype} on {old.device} "
                    f"to {view.dtype} on {view.device} after the optimizer was built; move the "
                    "model first, or rebuild the optimizer and load its state_dict"
                )
        return (engine.config if config == engine.config else config), lr, views

    @torch.no_grad()
    @exclusive
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One mL-BFGS step on every group; ``closure`` re-evaluates the loss, as usual.

        Every group is checked and prepared (gradients, finiteness) before any group
        changes, so an error, ``NonFiniteGradientError`` included, leaves all of them as
        they were. A second thread calling ``step`` meanwhile gets ``ConcurrentUseError``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        inputs = [self._engine_inputs(index) for index in range(len(self.param_groups))]
        # With several ranks every group takes part in every step's collectives, even one
        # whose gradients are all missing on this rank (it then contributes zeros).
        distributed = self._comm is not None and self._comm.size > 1
        prepared = []
        for index, (group, engine) in enumerate(zip(self.param_groups, self._engines, strict=True)):
            if not distributed and all(p.grad is None for p in group["params"]):
                continue
            grads = [
                torch.zeros_like(p) if p.grad is None else _dense(p.grad, index, i).detach()
                for i, p in enumerate(group["params"])
            ]
            engine.config, engine.lr, engine.params = inputs[index]
            try:
                prepared.append(engine.prepare(grads))
            except (TypeError, ValueError, FloatingPointError) as error:
                raise type(error)(f"param_groups[{index}]: {error}") from None
        for step in prepared:
            step.optimizer.apply(step)
        return loss

    # -- introspection and checkpoints ----------------------------------------------------

    def stats(self) -> list[list[dict[str, Any]]]:
        """Per group, the engine's per-block counters (see ``mlbfgs.MLBFGS.stats``)."""
        return [engine.stats() for engine in self._engines]

    @property
    def engines(self) -> tuple[engine_module.MLBFGS, ...]:
        """The per-group :class:`mlbfgs.MLBFGS` engines (read-only view)."""
        return tuple(self._engines)

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict`` plus each group's engine state under ``"mlbfgs_engines"``.

        Engine states hold tensors, ints, floats and lists only, so ``torch.save`` and
        ``torch.load(weights_only=True)`` round-trip it; ``map_location`` may move it.
        """
        state = super().state_dict()
        state[_ENGINES_KEY] = [engine.state_dict() for engine in self._engines]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``; engine tensors move to the parameters' device.

        Everything is checked before anything changes: a failed load leaves the optimizer
        as it was.
        """
        if not isinstance(state_dict, Mapping) or _ENGINES_KEY not in state_dict:
            raise KeyError(f"state_dict has no {_ENGINES_KEY!r}; is it from mlbfgs.torch.MLBFGS?")
        engines_state = state_dict[_ENGINES_KEY]
        if not isinstance(engines_state, list) or len(engines_state) != len(self._engines):
            raise ValueError(
                f"state_dict[{_ENGINES_KEY!r}] must hold {len(self._engines)} engine states, "
                f"one per param group"
            )
        saved_groups = state_dict.get("param_groups", [])
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=False)):
            for key in _STRUCTURAL_KEYS:
                if saved.get(key) != group[key]:
                    raise ValueError(
                        f"state_dict param_groups[{index}][{key!r}] is {saved.get(key)!r}, "
                        f"this optimizer has {group[key]!r}"
                    )
        backup = [engine.state_dict() for engine in self._engines]
        loaded = 0
        try:
            for engine, state in zip(self._engines, engines_state, strict=True):
                engine.load_state_dict(state)
                loaded += 1
            super().load_state_dict(
                {key: value for key, value in state_dict.items() if key != _ENGINES_KEY}
            )
        except Exception:
            for engine, state in zip(self._engines[:loaded], backup, strict=False):
                engine.load_state_dict(state)
            raise


def _as_float(value: object) -> object:
    """A one-element tensor's value (schedulers may store ``lr`` as a tensor), else ``value``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"lr must be a number, got a tensor of shape {tuple(value.shape)}")
        return value.item()
    return value


def _dense(grad: torch.Tensor, group: int, index: int) -> torch.Tensor:
    if grad.is_sparse:
        raise RuntimeError(
            f"param_groups[{group}] param {index} has a sparse gradient; mL-BFGS needs dense ones"
        )
    return grad
