"""Every backend on this machine against the NumPy reference, and every fast path against
the generic array-API kernel on the same arrays.

Hypothesis draws sizes, dtypes, hyperparameters and a seed for the data (Gaussian vectors
from NumPy's generator, so the arrays are well conditioned and every backend gets the
same numbers). Tolerances: ``backend_cases.py``, justified in ``docs/backends.md``.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import conditioning
import numpy as np
import pytest
from array_api_compat import device
from backend_cases import (
    FACTORIES,
    GENERIC,
    Backend,
    assert_close,
    dense_inverse_hessian,
    eps_of,
    rtol,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st
from reference import ReferenceConfig, reference_run

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core import (
    CurvatureHistory,
    Kernels,
    MomentumAverages,
    compact_form,
    damp,
    precondition,
    two_loop,
)

EXAMPLES = int(
    os.environ.get("MLBFGS_BACKEND_EXAMPLES")
    or (20 if os.environ.get("MLBFGS_HYPOTHESIS", "pinned") == "pinned" else 500)
)
"""Hypothesis examples per property and backend: 20 pinned, 500 in the random profile
(docs/testing.md); MLBFGS_BACKEND_EXAMPLES overrides (to measure tolerances)."""

dtypes = st.sampled_from([np.float64, np.float32])
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(params=list(FACTORIES), scope="module")
def backend(request: pytest.FixtureRequest) -> Backend:
    return FACTORIES[request.param]()


def gaussian(seed: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def curvature_pairs(seed: int, m: int, n: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """m pairs with positive curvature: y = A s for a random SPD A, plus a little noise."""
    rng = np.random.default_rng(seed)
    root = rng.standard_normal((n, n)) / np.sqrt(n)
    spd = root @ root.T + 0.5 * np.eye(n)
    s = rng.standard_normal((m, n))
    y = s @ spd + 0.01 * rng.standard_normal((m, n))
    return s.astype(dtype), y.astype(dtype)


# -- fast paths against the generic kernels, on the same arrays --------------------------


@settings(max_examples=EXAMPLES)
@given(n=st.integers(1, 40), m=st.integers(1, 4), dtype=dtypes, seed=seeds, data=st.data())
def test_fast_paths_match_generic_kernels(
    backend: Backend, n: int, m: int, dtype: Any, seed: int, data: st.DataObject
) -> None:
    fast, generic = kernels_for(backend.xp), Kernels(backend.xp)
    weight = data.draw(st.sampled_from([0.0, 1e-3, 0.1, 0.5, 0.9, 1.0]), "weight")
    scalar = data.draw(st.floats(-3.0, 3.0, allow_subnormal=False), "scalar")
    a, b, c = (gaussian(seed + i, (n,), dtype) for i in range(3))
    pairs, coefficients = gaussian(seed + 3, (2 * m, n), dtype), gaussian(seed + 4, (2 * m,), dtype)
    tol = rtol(dtype)

    def both(
        method: str, *args: np.ndarray | float, scale: np.ndarray, inplace: int | None = None
    ) -> None:
        results = []
        for kernels in (fast, generic):
            arrays = [backend.put(x) if isinstance(x, np.ndarray) else x for x in args]
            out = getattr(kernels, method)(*arrays)
            result = arrays[inplace] if inplace is not None else out
            assert result.dtype == arrays[0].dtype, method  # no silent promotion
            results.append(backend.get(result))
        assert_close(results[0], results[1], tol, f"{backend.name} {method}", scale)

    a64, b64, pairs64 = (np.abs(x.astype(np.float64)) for x in (a, b, pairs))
    both("lerp_", a, b, weight, inplace=0, scale=np.maximum(a64, b64))
    both("heavy_ball_", a, b, scalar, inplace=0, scale=abs(scalar) * a64 + b64)
    both("project", pairs, a, scale=pairs64 @ a64)
    combine_scale = abs(scalar) * a64 + np.abs(coefficients.astype(np.float64)) @ pairs64
    both("combine", pairs, coefficients, scalar, a, scale=combine_scale)
    both("descend", a, b, scalar, scale=a64 + abs(scalar) * b64)
    both("dot", a, a, scale=np.sum(a64 * a64))
    pair = []
    for kernels in (fast, generic):
        arrays = [backend.put(x) for x in (a, b, c, pairs[0])]
        kernels.lerp_all_(arrays[:2], arrays[2:], weight)
        pair.append(np.concatenate([backend.get(x) for x in arrays[:2]]))
    assert_close(pair[0], pair[1], tol, f"{backend.name} lerp_all_")


# -- primitives against the NumPy reference -----------------------------------------------


@settings(max_examples=EXAMPLES)
@given(
    n=st.integers(1, 30),
    steps=st.integers(1, 8),
    beta=st.sampled_from([0.0, 0.5, 0.9, 0.999]),
    dtype=dtypes,
    seed=seeds,
)
def test_momentum_averages(
    backend: Backend, n: int, steps: int, beta: float, dtype: Any, seed: int
) -> None:
    stream = gaussian(seed, (steps, 2, n), dtype)
    exact = stream[0].astype(np.float64)  # Eq (5) written out, in float64
    for theta_g in stream[1:].astype(np.float64):
        exact = beta * exact + (1 - beta) * theta_g
    results = []
    for b in (backend, FACTORIES["numpy"]()):
        kernels = kernels_for(b.xp)
        averages = MomentumAverages.start(b.xp, b.put(stream[0, 0]), b.put(stream[0, 1]))
        for theta, g in stream[1:]:
            averages.update(b.put(theta), b.put(g), beta, kernels)
        assert averages.theta.dtype == b.put(stream[0, 0]).dtype
        results.append(np.concatenate([b.get(averages.theta), b.get(averages.grad)]))
    # Each step rounds each entry about 3 times, relative to the largest magnitude involved.
    scale = np.max(np.abs(stream.astype(np.float64)))
    tol = 3 * steps * eps_of(dtype)
    assert_close(results[0], exact.ravel(), tol, f"{backend.name} Eq (5) vs float64", scale)
    if backend.name not in GENERIC:
        assert_close(results[0], results[1], rtol(dtype), f"{backend.name} Eq (5)")


@settings(max_examples=EXAMPLES)
@given(
    n=st.integers(1, 30),
    dtype=dtypes,
    seed=seeds,
    stretch=st.sampled_from([-2.0, 0.0, 0.005, 1.0, 3.0, 100.0]),
    tau0=st.sampled_from([0.5, 0.99, 1.0]),
)
def test_damping(
    backend: Backend, n: int, dtype: Any, seed: int, stretch: float, tau0: float
) -> None:
    # y = stretch * s + noise puts mu = s^T y / s^T s below, inside and above [sigma_L, sigma_H].
    s = gaussian(seed, (n,), dtype)
    y = (stretch * s + 0.01 * gaussian(seed + 1, (n,), dtype)).astype(dtype)
    y_hat, tau = damp(backend.put(s), backend.put(y), tau0, 0.01, 1.5)
    y_ref, tau_ref = damp(s, y, tau0, 0.01, 1.5)
    tol = rtol(dtype)
    assert abs(tau - tau_ref) <= tol * abs(tau_ref)
    assert y_hat.dtype == backend.put(s).dtype
    terms = abs(tau_ref) * np.abs(y.astype(np.float64)) + abs(1 - tau_ref) * np.abs(s)
    assert_close(backend.get(y_hat), y_ref, tol, f"{backend.name} Eq (7)", terms)
    ratio = float(np.dot(s, backend.get(y_hat)).astype(np.float64)) / float(np.dot(s, s))
    assert 0.01 * (1 - 1e-3) <= ratio <= 1.5 * (1 + 1e-3)  # Appendix A.2.4


def build_history(b: Backend, capacity: int, s: np.ndarray, y: np.ndarray) -> CurvatureHistory:
    like = b.put(s[0])
    history = CurvatureHistory.empty(b.xp, capacity, s.shape[1], like.dtype, device(like))
    kernels = kernels_for(b.xp)
    for s_i, y_i in zip(s, y, strict=True):
        history.push(b.put(s_i), b.put(y_i), kernels)
    return history


@settings(max_examples=EXAMPLES)
@given(capacity=st.integers(1, 4), pushes=st.integers(1, 9), extra=st.integers(0, 20), dtype=dtypes)
def test_ring_buffer(backend: Backend, capacity: int, pushes: int, extra: int, dtype: Any) -> None:
    n = 2 * capacity + extra
    s, y = curvature_pairs(pushes * 31 + n, pushes, n, dtype)
    got = build_history(backend, capacity, s, y)
    ref = build_history(FACTORIES["numpy"](), capacity, s, y)
    assert got.order == ref.order and len(got) == min(pushes, capacity)
    assert got.pairs.dtype == backend.put(s).dtype
    tol = rtol(dtype)
    assert_close(backend.get(got.pairs), ref.pairs, 0.0, f"{backend.name} pairs")  # copies
    # The Gram matrices by slot, written out in float64 from the stored (exact) rows.
    rows = np.asarray(backend.get(got.pairs), dtype=np.float64)
    s_rows, y_rows = rows[:capacity], rows[capacity:]
    gram_scale = np.abs(rows) @ np.abs(rows).T  # the inner products' terms
    assert_close(backend.get(got.s_dot_y), s_rows @ y_rows.T, tol, "S^T Y", gram_scale)
    assert_close(backend.get(got.y_dot_y), y_rows @ y_rows.T, tol, "Y^T Y", gram_scale)
    if backend.name not in GENERIC:
        assert_close(backend.get(got.s_dot_y), ref.s_dot_y, tol, f"{backend.name} S^T Y")
        assert_close(backend.get(got.y_dot_y), ref.y_dot_y, tol, f"{backend.name} Y^T Y")
    s_hist, y_hist = got.chronological(backend.xp)
    assert_close(backend.get(s_hist), s[-len(got) :], 0.0, f"{backend.name} oldest first")
    assert_close(backend.get(y_hist), y[-len(got) :], 0.0, f"{backend.name} oldest first")


@settings(max_examples=EXAMPLES)
@given(
    m=st.integers(0, 4),
    extra=st.integers(0, 20),
    gamma=st.sampled_from([None, 1.0, 0.3]),
    dtype=dtypes,
    seed=seeds,
)
def test_two_loop(
    backend: Backend, m: int, extra: int, gamma: float | None, dtype: Any, seed: int
) -> None:
    n = 2 * m + 1 + extra
    s, y = curvature_pairs(seed, m, n, dtype)
    g = gaussian(seed + 7, (n,), dtype)
    got = two_loop(backend.put(g), backend.put(s), backend.put(y), gamma)
    assert got.dtype == backend.put(g).dtype

    # Against Eq (4) in float64, within the spread of its result under one rounding (in
    # this dtype) of every input (tests/conditioning.py).
    def dense(g_: np.ndarray, s_: np.ndarray, y_: np.ndarray) -> np.ndarray:
        return dense_inverse_hessian(s_, y_, gamma) @ g_.astype(np.float64)

    inputs = (g.astype(np.float64), s.astype(np.float64), y.astype(np.float64))
    deviation = conditioning.result_spread(dense, *inputs, eps=eps_of(dtype))
    units = conditioning.rounding_units(2 * n * m + n, m)
    conditioning.assert_within_spread(
        backend.get(got), dense(*inputs), deviation, units, "two-loop vs Eq (4)", eps_of(dtype)
    )
    if backend.name not in GENERIC:
        ref = two_loop(g, s, y, gamma)
        assert_close(backend.get(got), ref, rtol(dtype), f"{backend.name} two-loop")


@settings(max_examples=EXAMPLES)
@given(
    capacity=st.integers(1, 4),
    pushes=st.integers(1, 7),
    extra=st.integers(0, 20),
    dtype=dtypes,
    seed=seeds,
)
def test_compact_form_precondition(
    backend: Backend, capacity: int, pushes: int, extra: int, dtype: Any, seed: int
) -> None:
    n = 2 * capacity + extra + 1
    s, y = curvature_pairs(seed, pushes, n, dtype)
    g = gaussian(seed + 7, (n,), dtype)
    results = {}
    for b in (backend, FACTORIES["numpy"]()):
        history = build_history(b, capacity, s, y)
        kernels = kernels_for(b.xp)
        form = compact_form(b.xp, history)
        g_b = b.put(g)
        hg = precondition(history, form, g_b, kernels.project(history.pairs, g_b), kernels)
        assert hg.dtype == g_b.dtype
        results[b.name if b is backend else "reference"] = (b.get(hg), form.gamma)
    got, ref = results[backend.name], results["reference"]
    tol = rtol(dtype)
    if backend.name not in GENERIC:
        assert abs(got[1] - ref[1]) <= tol * abs(ref[1])
        assert_close(got[0], ref[0], 10 * tol, f"{backend.name} compact form")
    # ... and the compact form is Eq (4) on the newest pairs (float64, independent), within
    # the spread of the result under one rounding (in this dtype) of every input.
    kept = min(pushes, capacity)
    inputs = (g.astype(np.float64), s[-kept:].astype(np.float64), y[-kept:].astype(np.float64))

    def dense(g_: np.ndarray, s_: np.ndarray, y_: np.ndarray) -> np.ndarray:
        return dense_inverse_hessian(s_, y_, None) @ g_

    deviation = conditioning.result_spread(dense, *inputs, eps=eps_of(dtype))
    units = conditioning.rounding_units(2 * n * kept + n, kept)
    what = f"{backend.name} compact form vs Eq (4)"
    conditioning.assert_within_spread(got[0], dense(*inputs), deviation, units, what, eps_of(dtype))
    newest = (s[-1].astype(np.float64), y[-1].astype(np.float64))
    gamma = float(newest[0] @ newest[1] / (newest[1] @ newest[1]))
    assert abs(got[1] - gamma) <= 4 * n * eps_of(dtype) * gamma


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
        "history": history,
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
    # Against the plain-loop reference (tests/reference.py) in float64 on the same data,
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
    units = conditioning.rounding_units(largest, problem["hyper"]["history"])
    what = f"{backend.name} after {problem['steps']} steps"
    compared = conditioning.compare_tame(got, want, deviation, units, what, eps)
    event(f"blocks: {len(partition)}")
    wrapped = all(s["pairs_pushed"] > hyper["history"] for s in got_stats)
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


@pytest.mark.parametrize("step_norm", ["gradient", "unit"])
def test_step_norms_match_numpy(backend: Backend, step_norm: str) -> None:
    """The step norms (the default one included) on every backend against the NumPy
    engine: float64, a well-conditioned noisy quadratic, 40 steps, three blocks."""
    problem = {
        "shapes": [(6,), (2, 3), (3, 4)],
        "hyper": {"lr": 0.1, "history": 3, "update_every": 3, "blocks": 3},
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
