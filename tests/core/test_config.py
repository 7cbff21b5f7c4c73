"""``MLBFGSConfig`` is the one definition of the hyperparameters: the constructors'
keyword arguments (``Hyperparameters``) name exactly its fields."""

from __future__ import annotations

import dataclasses
import typing

from mlbfgs.core.config import Hyperparameters, MLBFGSConfig


def test_the_constructor_keywords_are_the_config_fields() -> None:
    fields = {field.name: field.type for field in dataclasses.fields(MLBFGSConfig)}
    assert list(Hyperparameters.__annotations__) == list(fields)
    assert Hyperparameters.__total__ is False
    hints = typing.get_type_hints(Hyperparameters)
    for name in fields:  # each may be None: "the preset's value, else the default"
        assert type(None) in typing.get_args(hints[name]), name
