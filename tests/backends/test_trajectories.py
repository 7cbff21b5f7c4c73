"""Whole trajectories of every backend on this machine against the NumPy reference:
several blocks, pairs and step-control options, with tolerances from the conditioning of
what is compared (``conditioning.py``, ``backend_cases.py``; docs/backends.md)."""

from __future__ import annotations

import itertools
from typing import Any

import conditioning
import numpy as np
import pytest
from backend_cases import EXAMPLES, FACTORIES, GENERIC, Backend, dtypes, eps_of, seeds
from hypothesis import event, given, settings
from hypothesis import strategies as st
from reference import ReferenceConfig, reference_run

import mlbfgs

# -- whole trajectories -------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    """Parameter shapes, a block partition, hyperparameters and a gradient stream: mostly
    several blocks (one block only for ``blocks=None`` on one process) and enough steps for
    the ring buffer of every block to wrap."""
    shapes = draw(
        st.lists(st.sampled_from([(6,), (2, 3), (3, 4), (8,), (2, 2, 2)]), min_size=2, max_size=4)
    )
    count = len(shapes)
    kind = draw(st.sampled_from(["int", "explicit", "default"]))
    blocks: Any = None
    if kind == "int":
        blocks = draw(st.integers(2, count))
    elif kind == "explicit":
        order = draw(st.permutations(range(count)))
        cuts = sorted(draw(st.sets(st.integers(1, count - 1), min_size=1, max_size=count - 1)))
        bounds = [0, *cuts, count]
        blocks = [list(order[a:b]) for a, b in itertools.pairwise(bounds)]
    update_every = draw(st.integers(1, 3))
    history = draw(st.integers(1, 3))
    hyper = {
        "lr": draw(st.sampled_from([0.05, 0.1, 0.2])),
        "history_size": history,
        "update_every": update_every,
        "hessian_momentum": draw(st.sampled_from([0.0, 0.5, 0.9, 0.999])),
        "damping": draw(st.booleans()),
        "momentum": draw(st.sampled_from([0.0, 0.5, 0.9])),
        "weight_decay": draw(st.sampled_from([0.0, 0.01])),
        "warmup": draw(st.sampled_from([None, 0, 1])),
        "blocks": blocks,
    }
    # Pairs are formed at T, 2T, ...; the first only snapshots: (history + 2) T steps push
    # history + 1 pairs, one more than the ring holds.
    wrap = (history + 2) * update_every
    steps = draw(st.integers(wrap, wrap + 4))
    return {
        "shapes": shapes,
        "hyper": hyper,
        "steps": steps,
        "noise": draw(st.sampled_from([0.0, 0.1, 1.0])),
        "seed": draw(seeds),
        "dtype": draw(dtypes),
    }


def problem_data(problem: dict[str, Any]) -> tuple[list[np.ndarray], ...]:
    """Start, diagonal curvature and noise stream, in the problem's dtype."""
    rng = np.random.default_rng(problem["seed"])
    dtype, shapes = problem["dtype"], problem["shapes"]
    start = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    curvature = [rng.uniform(0.5, 2.0, shape).astype(dtype) for shape in shapes]
    noise = [
        [(problem["noise"] * rng.standard_normal(shape)).astype(dtype) for shape in shapes]
        for _ in range(problem["steps"])
    ]
    return start, curvature, noise


def run(b: Backend, problem: dict[str, Any]) -> tuple[np.ndarray, list[Any], list[list[int]]]:
    """K steps on ``g = h * theta + noise_t``: a diagonal quadratic (element-wise, so every
    backend computes the same gradient from the same parameters) and a noise stream.

    Returns the path (the parameters before every step and after the last, flat, float64),
    the block stats and the partition.
    """
    start, curvature, noise = problem_data(problem)
    params = [b.put(x) for x in start]
    h = [b.put(x) for x in curvature]
    opt = mlbfgs.MLBFGS(params, preset="paper", **problem["hyper"])  # what the reference does
    path = [conditioning.flat(start)]
    for step_noise in noise:
        opt.step([h_i * p + b.put(e) for h_i, p, e in zip(h, params, step_noise, strict=True)])
        path.append(conditioning.flat([b.get(p) for p in params]))
    for p, x in zip(params, start, strict=True):
        assert p.dtype == b.put(x).dtype
    return np.asarray(path), opt.stats(), [list(layout.indices) for layout in opt.layouts]


@settings(max_examples=EXAMPLES)
@given(problem=problems())
def test_trajectories_match_numpy(backend: Backend, problem: dict[str, Any]) -> None:
    got, got_stats, partition = run(backend, problem)
    # Against the plain-loop reference (tests/support/reference.py) in float64 on the same data,
    # within the spread of eps-perturbed reference runs, eps of the problem's dtype.
    start, curvature, noise = problem_data(problem)
    hyper = {k: v for k, v in problem["hyper"].items() if k != "blocks"}

    def gradient(t: int, params: list[np.ndarray]) -> list[np.ndarray]:
        return [
            c.astype(np.float64) * p + e.astype(np.float64)
            for c, p, e in zip(curvature, params, noise[t - 1], strict=True)
        ]

    def run_reference(grad: Any) -> list[np.ndarray]:
        initial = [x.astype(np.float64) for x in start]
        cfg = ReferenceConfig(**hyper)
        return reference_run(initial, grad, problem["steps"], partition, cfg)[0]

    eps = conditioning.trajectory_eps(eps_of(problem["dtype"]), hyper["hessian_momentum"])
    want = conditioning.path_of(run_reference, gradient)
    deviation = conditioning.spread(run_reference, gradient, want, eps)
    sizes = [int(np.prod(shape)) for shape in problem["shapes"]]
    largest = max(sum(sizes[i] for i in block) for block in partition)
    units = conditioning.rounding_units(largest, problem["hyper"]["history_size"])
    what = f"{backend.name} after {problem['steps']} steps"
    compared = conditioning.compare_tame(got, want, deviation, units, what, eps)
    event(f"blocks: {len(partition)}")
    wrapped = all(s["pairs_pushed"] > hyper["history_size"] for s in got_stats)
    event(f"ring wrapped in every block: {wrapped}")
    event(f"steps compared: {'all' if compared == len(want) else 'before divergence'}")
    if backend.name in GENERIC:
        return
    ref, ref_stats, _ = run(FACTORIES["numpy"](), problem)
    assert [s["pairs_pushed"] for s in got_stats] == [s["pairs_pushed"] for s in ref_stats]
    # The fast paths against the NumPy engine: both lie within `units` spreads of the
    # reference, so they are held to the same allowance (a fixed tolerance fails on noisy
    # T = 1 pairs, whose trajectories amplify float32 rounding far beyond 20 eps).
    what = f"{backend.name} vs NumPy engine after {problem['steps']} steps"
    conditioning.compare_tame(got, ref, deviation, units, what, eps)


@pytest.mark.parametrize("step_norm", ["gradient", "trust", "unit"])
def test_step_norms_match_numpy(backend: Backend, step_norm: str) -> None:
    """The step norms (the default one included) on every backend against the NumPy
    engine: float64, a well-conditioned noisy quadratic, 40 steps, three blocks."""
    problem = {
        "shapes": [(6,), (2, 3), (3, 4)],
        "hyper": {"lr": 0.1, "history_size": 3, "update_every": 3, "blocks": 3},
        "steps": 40,
        "noise": 0.1,
        "seed": 5,
        "dtype": np.float64,
    }
    problem["hyper"]["step_norm"] = step_norm
    got, stats, _ = run(backend, problem)
    want, _, _ = run(FACTORIES["numpy"](), problem)
    assert all(s["pairs_stored"] == 3 for s in stats)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
