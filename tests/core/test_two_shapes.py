"""Both shapes of the step run the same core functions (docs/jax.md, "One algorithm, two
shapes"): the engine (``mlbfgs.MLBFGS``: mutable state, Python branches, in-place kernels)
and the pure step (``core/functional.py``: state in, new state out, selections) each call
every function of Eq (5)-(7), the push, the compact form and step control.

Each shape's calls into ``mlbfgs/core`` are recorded with ``sys.setprofile``. Apart from
what is a shape by nature (the two drivers, the engine's containers, the kernels' in-place
and pure forms), every core function one shape calls, the other calls too: a new piece of
mathematics written for one shape alone fails :func:`test_both_shapes_call_the_same_core_functions`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core import MLBFGSConfig
from mlbfgs.core import functional as pure

CORE = Path(mlbfgs.__file__).parent / "core"

SHAPE_FILES = {
    "algorithm.py": "the engine's driver and its block state",
    "functional.py": "the pure step's driver",
    "pure_pairs.py": "the pure step's push (selections and one cond)",
    "pure_state.py": "the pure step's fixed-shape state",
    "kernels.py": "the hot-path primitives, in an in-place form (engine) and a pure form",
}
SHAPE_FUNCTIONS = {
    ("averages.py", "MomentumAverages"): "the engine's container of Eq (5)'s averages",
    ("history.py", "CurvatureHistory"): "the engine's ring buffer (slot list, scaled rows)",
    ("preconditioner.py", "compact_form"): "builds the engine's CompactForm with middle_matrix",
    ("preconditioner.py", "precondition"): "calls apply_compact_form on the engine's history",
}

EQUATIONS = {
    ("averages.py", "update_averages"),  # Eq (5)
    ("averages.py", "stalled_share"),
    ("curvature.py", "curvature_pair"),  # Eq (6)
    ("curvature.py", "mix_with_newest"),
    ("curvature.py", "prepare_pair"),  # Eq (7) and acceptance
    ("damping.py", "curvature_ratio"),
    ("damping.py", "damping_tau"),
    ("damping.py", "damped_y"),
    ("history.py", "new_products"),  # the push's Gram products
    ("preconditioner.py", "newest_gamma"),
    ("preconditioner.py", "middle_matrix"),
    ("preconditioner.py", "apply_compact_form"),  # Algorithm 2
    ("step_norm.py", "direction_scales"),
    ("first_order.py", "apply_weight_decay"),
    ("first_order.py", "in_warmup"),  # lines 7-8
    ("first_order.py", "heavy_ball"),
    ("initial_matrix.py", "update_moment"),  # h0="adam"
    ("initial_matrix.py", "scaled_input"),
    ("initial_matrix.py", "delta_root"),
    ("initial_matrix.py", "unit_metric_pair"),
    ("initial_matrix.py", "fixed_gamma"),
}

OPTIONS = {
    "history_size": 2,
    "update_every": 2,
    "pair_momentum": 0.5,
    "weight_decay": 0.01,
    "step_norm": "gradient",
    "warmup": 1,
}
STEPS = 12


@contextmanager
def core_calls() -> Iterator[set[tuple[str, str]]]:
    """``(file, qualified name)`` of every Python function of ``mlbfgs/core`` called inside."""
    calls: set[tuple[str, str]] = set()

    def record(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event == "call" and Path(code.co_filename).parent == CORE:
            # a nested function or generator counts as the function that holds it
            calls.add((Path(code.co_filename).name, code.co_qualname.split(".<locals>")[0]))

    sys.setprofile(record)
    try:
        yield calls
    finally:
        sys.setprofile(None)


def problem(seed: int) -> tuple[list[np.ndarray], Callable[[int, list[np.ndarray]], list]]:
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    curvature = [rng.uniform(0.5, 2.0, p.shape) for p in start]
    noise = [[0.1 * rng.standard_normal(p.shape) for p in start] for _ in range(STEPS)]

    def gradient(t: int, params: list[np.ndarray]) -> list[np.ndarray]:
        return [c * p + e for c, p, e in zip(curvature, params, noise[t], strict=True)]

    return start, gradient


def engine_calls(options: dict[str, Any]) -> set[tuple[str, str]]:
    start, gradient = problem(0)
    params = [p.copy() for p in start]
    opt = mlbfgs.MLBFGS(params, lr=0.1, blocks=1, **options)
    with core_calls() as calls:
        for t in range(STEPS):
            opt.step(gradient(t, params))
    assert opt.stats()[0]["pairs_pushed"] >= 2  # the ring filled and wrapped
    return calls


def pure_calls(options: dict[str, Any]) -> set[tuple[str, str]]:
    start, gradient = problem(0)
    params = [p.copy() for p in start]
    config, kernels = MLBFGSConfig(**options), kernels_for(np)
    state = pure.init(np, [np.concatenate([p.ravel() for p in params])], config, np.float64)
    with core_calls() as calls:
        for t in range(STEPS):
            theta = np.concatenate([p.ravel() for p in params])
            g = np.concatenate([g.ravel() for g in gradient(t, params)])
            (update,), state = pure.step(state, [theta], [g], 0.1, config, kernels)
            params = [
                p + u.reshape(p.shape) for p, u in zip(params, np.split(update, [12]), strict=True)
            ]
    assert int(state.blocks[0].pushed) >= 2
    return calls


def shared(calls: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The calls that are not a shape by nature."""
    return {
        (file, name)
        for file, name in calls
        if file not in SHAPE_FILES and (file, name.split(".")[0]) not in SHAPE_FUNCTIONS
    }


@pytest.fixture(scope="module")
def calls() -> dict[str, set[tuple[str, str]]]:
    """Each shape's calls over two configurations: heavy ball over ``gamma I``, and
    ``h0="adam"`` (which replaces heavy ball by Adam's first moment)."""
    found: dict[str, set[tuple[str, str]]] = {"engine": set(), "pure": set()}
    for h0 in ("gamma", "adam"):
        options = {**OPTIONS, "h0": h0}
        found["engine"] |= engine_calls(options)
        found["pure"] |= pure_calls(options)
    return found


def test_both_shapes_call_every_equation(calls: dict[str, set[tuple[str, str]]]) -> None:
    for shape, found in calls.items():
        assert not EQUATIONS - found, f"{shape} does not call {sorted(EQUATIONS - found)}"


def test_both_shapes_call_the_same_core_functions(calls: dict[str, set[tuple[str, str]]]) -> None:
    engine, pure_step = shared(calls["engine"]), shared(calls["pure"])
    assert engine - pure_step == set(), "only the engine calls these"
    assert pure_step - engine == set(), "only the pure step calls these"


def test_the_recorder_sees_shape_specific_code(calls: dict[str, set[tuple[str, str]]]) -> None:
    """The exclusions above are real: each shape's driver is recorded, and only there."""
    assert ("algorithm.py", "update_curvature") in calls["engine"] - calls["pure"]
    assert ("pure_pairs.py", "form_pair") in calls["pure"] - calls["engine"]
