"""The checks ``mlbfgs.torch.MLBFGS`` runs on its param groups before anything changes.

At every step each group's current values (a scheduler may have written them, the model
may have moved) and gradients; on ``load_state_dict`` the saved groups' structural
values. Errors name the group (``param_groups[i]``) and what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.config import MLBFGSConfig
from ..engine import MLBFGS
from ..engine.validation import check_lr
from . import dtensor

CONFIG_KEYS = tuple(field.name for field in dataclasses.fields(MLBFGSConfig))
"""Group hyperparameters handed to the engine's configuration at every step."""
STRUCTURAL_KEYS = ("history_size", "blocks", "history_dtype", "h0")
"""Fixed once the engine exists: they shape its state."""


def group_inputs(
    index: int, group: Mapping[str, Any], engine: MLBFGS, built: Mapping[str, Any], sharded: bool
) -> tuple[MLBFGSConfig, float, list[torch.Tensor]]:
    """Group ``index``'s current hyperparameters and tensors, checked against ``built``
    (its structural values when its ``engine`` was built); changes nothing."""
    for key, value in built.items():
        if group[key] != value:
            raise ValueError(
                f"param_groups[{index}][{key!r}] changed from {value!r} to {group[key]!r}; "
                "it is fixed when the optimizer is built"
            )
    try:
        config = MLBFGSConfig(**{key: group[key] for key in CONFIG_KEYS})
        lr = check_lr(as_float(group["lr"]))
        if callable(lr):
            raise TypeError("lr must be a number; use torch.optim.lr_scheduler for schedules")
    except (TypeError, ValueError) as error:
        raise type(error)(f"param_groups[{index}]: {error}") from None
    # Fresh views each step: ``model.to(...)`` may have swapped a parameter's storage.
    views = [p.detach() for p in group["params"]]
    if sharded:
        views = dtensor.local_views(group["params"])
    for i, (view, old) in enumerate(zip(views, engine.params, strict=True)):
        if view.device != old.device or view.dtype != old.dtype:
            raise ValueError(
                f"param_groups[{index}] param {i} moved from {old.dtype} on {old.device} "
                f"to {view.dtype} on {view.device} after the optimizer was built; move the "
                "model first, or rebuild the optimizer and load its state_dict"
            )
    return config, lr, views


def check_saved_groups(groups: Sequence[Mapping[str, Any]], state_dict: object) -> None:
    """A ``state_dict`` to load: a mapping whose param groups have this optimizer's
    structural values."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    saved_groups = state_dict.get("param_groups", [])
    for index, (group, saved) in enumerate(zip(groups, saved_groups, strict=False)):
        for key in STRUCTURAL_KEYS:
            if key not in saved:
                raise KeyError(
                    f"state_dict param_groups[{index}] has no {key!r}; is it from "
                    "mlbfgs.torch.MLBFGS?"
                )
            if saved[key] != group[key]:
                raise ValueError(
                    f"state_dict param_groups[{index}][{key!r}] is {saved[key]!r}, "
                    f"this optimizer has {group[key]!r}"
                )


def as_float(value: object) -> object:
    """A one-element tensor's value (schedulers may store ``lr`` as a tensor), else ``value``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"lr must be a number, got a tensor of shape {tuple(value.shape)}")
        return value.item()
    return value


def dense_grad(p: torch.Tensor, group: int, index: int) -> torch.Tensor:
    """``p``'s gradient, refused if sparse."""
    grad = p.grad
    assert grad is not None
    if grad.is_sparse:
        raise RuntimeError(
            f"param_groups[{group}] param {index} has a sparse gradient; mL-BFGS needs dense ones"
        )
    return grad.detach()
