"""``MLBFGSConfig`` is the one definition of the hyperparameters: the constructors'
keyword arguments (``Hyperparameters``) name exactly its fields, each field's rule accepts
its boundary, and a refused value's error names the field, the rule and the value."""

from __future__ import annotations

import dataclasses
import re
import typing

import numpy as np
import pytest

import mlbfgs
from mlbfgs.core.config import Hyperparameters, MLBFGSConfig


def test_the_constructor_keywords_are_the_config_fields() -> None:
    fields = {field.name: field.type for field in dataclasses.fields(MLBFGSConfig)}
    assert list(Hyperparameters.__annotations__) == list(fields)
    assert Hyperparameters.__total__ is False
    hints = typing.get_type_hints(Hyperparameters)
    for name in fields:  # each may be None: "the preset's value, else the default"
        assert type(None) in typing.get_args(hints[name]), name


RULES = {
    "hessian_momentum": ("in [0, 1)", 0.0, 1.0),
    "tau0": ("in (0, 1]", 1.0, 0.0),
    "sigma_low": ("in [0, 1)", 0.0, 1.0),
    "sigma_high": ("> 1", 1.0 + 1e-9, 1.0),
    "momentum": ("in [0, 1)", 0.0, 1.0),
    "weight_decay": ("a finite number >= 0", 0.0, -1e-12),
    "adam_beta2": ("in [0, 1)", 0.0, 1.0),
    "adam_eps": ("> 0", 1e-30, 0.0),
}


@pytest.mark.parametrize("name", list(RULES))
def test_config_accepts_its_boundary_and_names_the_rule(name: str) -> None:
    rule, accepted, rejected = RULES[name]
    assert getattr(MLBFGSConfig(**{name: accepted}), name) == accepted
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'{name} must be {rule}, got {rejected!r}')}$"
    ):
        MLBFGSConfig(**{name: rejected})


def test_step_control_options_are_checked_by_name() -> None:
    params = [np.ones(3)]
    for kwargs, match in [
        (
            {"step_norm": "length"},
            r"step_norm must be one of \('none', 'gradient', 'trust', 'unit'\), got 'length'",
        ),
        ({"pair_momentum": 1.0}, r"pair_momentum must be in \[0, 1\), got 1.0"),
        ({"pair_momentum": -0.1}, r"pair_momentum must be in \[0, 1\)"),
        ({"averaging": "median"}, r"averaging must be one of \('mean', 'sum'\), got 'median'"),
        ({"pair_timing": "later"}, r"pair_timing must be one of"),
        ({"restart_grad_average": 1}, r"restart_grad_average must be a bool, got 1"),
        ({"preset": "fast"}, r"preset must be None, 'paper' or 'released', got 'fast'"),
    ]:
        with pytest.raises(ValueError, match=match):
            mlbfgs.MLBFGS(params, **kwargs)
    with pytest.raises(TypeError, match=r"unknown hyperparameters \['speed'\]"):
        mlbfgs.MLBFGSConfig.from_preset(None, speed=1.0)
