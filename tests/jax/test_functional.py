"""The pure step (``core/functional.py``) on NumPy and, through ``mlbfgs.jax``, on JAX
(eager and jitted) against the engine's trajectory, over every step-control option.

Tolerance: the pure step computes what the engine computes, in the same order, except
where it must differ: selections instead of branches, the compact form's inverse of an
``M x M`` matrix padded with an identity instead of the ``m x m`` one, and JAX's own
``pow`` and matrix products. Those are a few roundings per step, so the drawn trajectories
are compared as the backends' are (``tests/support/conditioning.py``, docs/testing.md):
step by step within ``rounding_units`` times the spread of eps-perturbed engine runs,
while the engine is tame. On the well-conditioned drawn problems that allowance is below
1e-12 relative; on the ill-conditioned ones (T = 1 with ``step_norm="none"`` and beta =
0.999, where s of Eq (6) is mostly cancellation) the measured spread sets it, and a fixed
1e-12 would fail there on any two machines. The fixed problems below (a contracting
quadratic, 300 and 60 steps) are held to 1e-12 relative.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import conditioning
import numpy as np
import pytest
from backend_cases import EXAMPLES, seeds
from helpers import pure_run
from hypothesis import event, given, settings
from hypothesis import strategies as st

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core import MLBFGSConfig
from mlbfgs.core import functional as pure
from mlbfgs.core.pieces import resolve_blocks
from mlbfgs.engine.layout import BlockLayout

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")
mlbfgs_jax = pytest.importorskip("mlbfgs.jax")

TOLERANCE = 1e-12
SHAPES = [(6,), (2, 3), (3, 4), (8,), (2, 2, 2)]


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    """Shapes, blocks, every step-control option, and enough steps to wrap the ring."""
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3))
    history, update_every = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    options = {
        "history_size": history,
        "update_every": update_every,
        "hessian_momentum": draw(st.sampled_from([0.0, 0.5, 0.9, 0.999])),
        "damping": draw(st.booleans()),
        "momentum": draw(st.sampled_from([0.0, 0.9])),
        "weight_decay": draw(st.sampled_from([0.0, 0.01])),
        "warmup": draw(st.sampled_from([None, 0, 1])),
        "step_norm": draw(st.sampled_from(["none", "gradient", "trust", "unit"])),
        "pair_momentum": draw(st.sampled_from([0.0, 0.5])),
        "averaging": draw(st.sampled_from(["mean", "sum"])),
        "restart_grad_average": draw(st.booleans()),
        "pair_timing": draw(st.sampled_from(["after_step", "before_step"])),
        "h0": draw(st.sampled_from(["gamma", "adam"])),
    }
    steps = (history + 2) * update_every + draw(st.integers(0, 4))
    return {
        "shapes": shapes,
        "options": options,
        "blocks": draw(st.sampled_from([None, 1, len(shapes)])),
        "lr": draw(st.sampled_from([0.05, 0.2])),
        "steps": steps,
        "seed": draw(seeds),
        # a step whose gradient of one parameter is NaN (skipped by its block), or none
        "nan_at": draw(st.sampled_from([None, 1, update_every, steps // 2])),
    }


Gradient = Callable[[int, list[Any]], list[Any]]


def problem_gradient(problem: dict[str, Any]) -> tuple[list[np.ndarray], Gradient]:
    """The start and ``gradient(t, params)`` (t 1-based) of a noisy diagonal quadratic."""
    rng = np.random.default_rng(problem["seed"])
    shapes = problem["shapes"]
    start = [rng.standard_normal(s) for s in shapes]
    curvature = [rng.uniform(0.5, 2.0, s) for s in shapes]
    noise = [[0.3 * rng.standard_normal(s) for s in shapes] for _ in range(problem["steps"])]

    def gradient(t: int, params: list[Any]) -> list[Any]:
        grads = [c * p + e for c, p, e in zip(curvature, params, noise[t - 1], strict=True)]
        if problem["nan_at"] == t:
            grads[0] = grads[0] * np.nan
        return grads

    return start, gradient


def engine_run(problem: dict[str, Any], gradient: Gradient) -> list[np.ndarray]:
    """The engine's final parameters (``conditioning``'s ``Run``)."""
    start, _ = problem_gradient(problem)
    params = [p.copy() for p in start]
    opt = mlbfgs.MLBFGS(params, lr=problem["lr"], blocks=problem["blocks"], **problem["options"])
    for t in range(1, problem["steps"] + 1):
        opt.step(gradient(t, params))
    return params


def numpy_pure_path(problem: dict[str, Any]) -> np.ndarray:
    """``core.functional`` on NumPy: the parameters at every step, ``(steps + 1, n)``."""
    start, gradient = problem_gradient(problem)
    config = MLBFGSConfig(**problem["options"])
    kernels = kernels_for(np)
    params, path = [p.copy() for p in start], []
    partition = resolve_blocks(problem["blocks"], [p.size for p in start], 1)
    layouts = [BlockLayout.of(b, pieces, params) for b, pieces in enumerate(partition)]

    def gather(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [layout.gather(np, arrays) for layout in layouts]

    state = pure.init(np, gather(params), config, np.float64)
    for t in range(1, problem["steps"] + 1):
        path.append(conditioning.flat(params))
        grads = gradient(t, params)
        updates, state = pure.step(
            state, gather(params), gather(grads), problem["lr"], config, kernels
        )
        for layout, update in zip(layouts, updates, strict=True):
            layout.scatter(np, layout.gather(np, params) + update, params)
    return np.asarray([*path, conditioning.flat(params)])


def jax_path(problem: dict[str, Any], jit: bool) -> np.ndarray:
    """``mlbfgs.jax`` through optax: the parameters at every step."""
    start, gradient = problem_gradient(problem)
    opt = mlbfgs_jax.mlbfgs(problem["lr"], blocks=problem["blocks"], **problem["options"])
    update = jax.jit(opt.update) if jit else opt.update
    params = [jnp.asarray(p) for p in start]
    state, path = opt.init(params), []
    for t in range(1, problem["steps"] + 1):
        path.append(conditioning.flat(params))
        updates, state = update(gradient(t, params), state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray([*path, conditioning.flat(params)])


def assert_follows_engine(problem: dict[str, Any], path: np.ndarray, what: str) -> str:
    """Step by step within ``units`` spreads of eps-perturbed engine runs, while the engine
    is tame (``conditioning.compare_tame``: the backends' trajectory allowance); returns
    which steps were compared, for hypothesis's statistics."""
    _, gradient = problem_gradient(problem)
    options = problem["options"]
    beta = max(options["hessian_momentum"], 0.999 if options["h0"] == "adam" else 0.0)
    eps = conditioning.trajectory_eps(conditioning.EPS, beta)

    def run(grad: Gradient) -> list[np.ndarray]:
        return engine_run(problem, grad)

    want = conditioning.path_of(run, gradient)
    deviation = conditioning.spread(run, gradient, want, eps)
    sizes = [int(np.prod(shape)) for shape in problem["shapes"]]
    partition = resolve_blocks(problem["blocks"], sizes, 1)
    largest = max(sum(b - a for _, a, b in pieces) for pieces in partition)
    units = conditioning.rounding_units(largest, options["history_size"])
    compared = conditioning.compare_tame(path, want, deviation, units, what, eps)
    return f"steps compared: {'all' if compared == len(want) else 'before divergence'}"


@settings(max_examples=3 * EXAMPLES, deadline=None)  # 60 pinned; about 50 ms each
@given(problems())
def test_pure_step_on_numpy_follows_the_engine(problem: dict[str, Any]) -> None:
    event(assert_follows_engine(problem, numpy_pure_path(problem), "pure step on NumPy"))


@settings(max_examples=EXAMPLES // 2, deadline=None)  # 10 pinned; a compile each, about 1.5 s
@given(problems())
def test_jitted_jax_update_follows_the_engine(problem: dict[str, Any]) -> None:
    with jax.enable_x64(True):
        event(assert_follows_engine(problem, jax_path(problem, jit=True), "jitted JAX"))


@settings(max_examples=max(3, EXAMPLES // 20), deadline=None)  # op by op: several s each
@given(problems())
def test_eager_jax_update_follows_the_engine(problem: dict[str, Any]) -> None:
    with jax.enable_x64(True):
        event(assert_follows_engine(problem, jax_path(problem, jit=False), "eager JAX"))


def assert_close(found: list[Any], expected: list[Any]) -> None:
    """Relative in norm, leaf by leaf, within :data:`TOLERANCE`."""
    for a, b in zip(found, expected, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(a))
        assert float(np.linalg.norm(a - b)) <= TOLERANCE * float(np.linalg.norm(b))


def quadratic_run(
    opt: Any, params: Any, steps: int, jit: bool, state: Any = None, first: int = 0
) -> tuple[Any, Any]:
    """Updates ``first`` to ``first + steps`` of a fixed ill-conditioned quadratic with a
    deterministic perturbation, continuing from ``state``."""
    curvature = {"w": jnp.linspace(0.1, 10.0, 12).reshape(3, 4), "b": jnp.linspace(1.0, 2.0, 5)}
    update = jax.jit(opt.update) if jit else opt.update
    state = opt.init(params) if state is None else state
    for k in range(first, first + steps):
        grads = jax.tree_util.tree_map(
            lambda c, p, k=k: c * p + 0.01 * jnp.sin(k + p), curvature, params
        )
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def start_params() -> dict[str, Any]:
    return {"w": jnp.ones((3, 4)), "b": -jnp.ones(5)}


def test_jitted_300_steps_equal_the_eager_ones() -> None:
    """Tolerance: XLA may fuse the jitted program (an FMA, another summation order), a few
    float64 units per step on a contracting quadratic; 1e-12 as above."""
    with jax.enable_x64(True):
        opt = mlbfgs_jax.mlbfgs(0.1, update_every=5, history_size=4)
        eager, _ = quadratic_run(opt, start_params(), 300, jit=False)
        jitted, state = quadratic_run(opt, start_params(), 300, jit=True)
        assert mlbfgs_jax.stats(state)[0]["pairs_pushed"] > 4  # the ring wrapped
        assert_close(jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(eager))


def test_state_survives_pickle_and_resumes_exactly() -> None:
    """Same program, same inputs, same machine: the resumed run is bitwise the straight one."""
    opt = mlbfgs_jax.mlbfgs(0.1, update_every=3, history_size=3)
    straight, _ = quadratic_run(opt, start_params(), 40, jit=True)
    half, state = quadratic_run(opt, start_params(), 20, jit=True)
    restored = pickle.loads(pickle.dumps(state))
    assert isinstance(restored, mlbfgs_jax.PureState)
    assert int(restored.step) == 20
    resumed, _ = quadratic_run(opt, half, 20, jit=True, state=restored, first=20)
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_float32_without_x64_keeps_float32_state() -> None:
    """x64 off (JAX's default): every array of the state is float32 or narrower; the
    Gram algebra then runs in float32 (stated in docs/jax.md)."""
    opt = mlbfgs_jax.mlbfgs(0.1, update_every=2, history_size=2)
    params, state = quadratic_run(opt, start_params(), 12, jit=True)
    floats = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {str(x.dtype) for x in floats} == {"float32"}
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(params))
    assert mlbfgs_jax.stats(state)[0]["pairs_pushed"] > 0


def test_engine_refuses_jax_arrays_and_names_the_pure_api() -> None:
    with pytest.raises(ValueError, match=r"params\[0\].*mlbfgs\.jax\.mlbfgs"):
        mlbfgs.MLBFGS([jnp.ones(3)], lr=0.1)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="history_size"):
        mlbfgs_jax.mlbfgs(0.1, history_size=0)
    with pytest.raises(ValueError, match="history_dtype"):
        mlbfgs_jax.mlbfgs(0.1, history_dtype="bfloat16")
    opt = mlbfgs_jax.mlbfgs(0.1)
    with pytest.raises(TypeError, match="leaf 0 has dtype int32"):
        opt.init([jnp.ones(3, dtype=jnp.int32)])
    state = opt.init([jnp.ones(3)])
    with pytest.raises(ValueError, match="needs params"):
        opt.update([jnp.ones(3)], state)


def test_blocks_sharded_over_four_devices_equal_one_device() -> None:
    """``mesh=``: 4 forced CPU devices each hold one block (a leaf cut across two) and
    precondition it; ``step_norm="unit"`` sums over them with a ``psum``. Against the same
    blocks on one device, 60 float64 steps: only the order of the unit total's sum and the
    zero padding's summation order differ, so the 1e-12 bound above holds."""
    script = Path(__file__).parents[1] / "support" / "jax_devices.py"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    for step_norm in ("gradient", "unit"):
        assert report[step_norm]["pairs_on_devices"] == 4
        assert min(report[step_norm]["pushed"]) > 3  # every block's ring wrapped
        assert report[step_norm]["relative_error"] <= TOLERANCE


def test_bfloat16_leaves_keep_a_float32_state_and_round_once_per_step() -> None:
    """bfloat16 leaves: the state is float32 and each step rounds ``theta + update`` once
    (``optax.apply_updates``). Against a float32 run whose parameters are rounded through
    bfloat16 after each step, on the same gradients of the same values: the two jitted
    programs differ only in where the bfloat16 to float32 conversion (exact) happens, so
    they agree to the last bit unless XLA rounds the float32 arithmetic of one of them
    differently, which moves a parameter by one bfloat16 unit (2^-8 relative) and a
    contracting quadratic keeps such gaps from growing: 4 units are allowed."""
    opt = mlbfgs_jax.mlbfgs(0.05, update_every=3, history_size=3)
    update = jax.jit(opt.update)
    curvature = {"w": jnp.linspace(0.5, 2.0, 12).reshape(3, 4), "b": jnp.linspace(1.0, 2.0, 5)}
    half = jax.tree_util.tree_map(lambda c: jnp.astype(c, jnp.bfloat16), start_params())
    shadow = jax.tree_util.tree_map(lambda p: jnp.astype(p, jnp.float32), half)
    half_state, shadow_state = opt.init(half), opt.init(shadow)
    assert {str(x.dtype) for x in jax.tree_util.tree_leaves(half_state.blocks[0].pairs)} == {
        "float32"
    }
    for k in range(40):
        grads = jax.tree_util.tree_map(
            lambda c, p, k=k: c * jnp.astype(p, jnp.float32) + 0.01 * jnp.sin(k + 0.0),
            curvature,
            half,
        )
        updates, half_state = update(grads, half_state, half)
        half = optax.apply_updates(half, updates)
        updates, shadow_state = update(grads, shadow_state, shadow)
        shadow = jax.tree_util.tree_map(
            lambda p: jnp.astype(jnp.astype(p, jnp.bfloat16), jnp.float32),
            optax.apply_updates(shadow, updates),
        )
    assert mlbfgs_jax.stats(half_state)[0]["pairs_pushed"] > 3
    for a, b in zip(
        jax.tree_util.tree_leaves(half), jax.tree_util.tree_leaves(shadow), strict=True
    ):
        assert a.dtype == jnp.bfloat16
        gap = np.abs(np.asarray(a, np.float32) - np.asarray(b))
        assert np.all(gap <= 4 * 2.0**-8 * np.maximum(np.abs(np.asarray(b)), 2.0**-8))


def test_an_average_at_its_fixed_point_is_not_stalled_in_the_pure_step() -> None:
    """As in the engine (``tests/engine/test_half_precision.py``): zero gradients keep theta
    at M_theta, so s = 0 with no rounding lost; the share is 0, not 1 (on NumPy)."""
    config = MLBFGSConfig(update_every=2)
    _, state = pure_run(np, np.linspace(1.0, 2.0, 8), config, lambda t, theta: np.zeros(8), 6)
    assert int(state.blocks[0].has_snapshot) and float(state.blocks[0].average_stalled) == 0.0


def test_the_pure_steps_counters_are_the_engines_stats() -> None:
    """Pairs pushed and rejected (undamped, on a quadratic with a negative eigenvalue), a
    skipped step (a NaN at step 5), mu and tau of the last pair: the pure step's state
    holds what the engine's ``stats()`` reports, counts exactly, ratios to 1e-12."""
    options = {"update_every": 1, "history_size": 3, "damping": False, "momentum": 0.0}
    options["hessian_momentum"] = 0.0
    scale = np.array([1.0, -0.5, 2.0, 0.3])

    def gradient(t: int, theta: np.ndarray) -> np.ndarray:
        g = scale * theta + 0.01 * np.sin(t * np.arange(4.0))
        if t == 5:
            g[0] = np.nan
        return g

    params = [np.array([1.0, 2.0, -1.0, 0.5])]
    _, state = pure_run(np, params[0].copy(), MLBFGSConfig(**options), gradient, 12)
    opt = mlbfgs.MLBFGS(params, lr=0.1, **options)
    for t in range(1, 13):
        opt.step([gradient(t, params[0])])
    stats, block = opt.stats()[0], state.blocks[0]
    assert (stats["pairs_pushed"], stats["pairs_rejected"], stats["skipped_steps"]) == (7, 2, 1)
    assert (int(block.pushed), int(block.rejected), int(block.skipped)) == (7, 2, 1)
    for name in ("mu", "tau", "average_stalled"):
        assert float(getattr(block, name)) == pytest.approx(stats[name], rel=1e-12, abs=0.0)
