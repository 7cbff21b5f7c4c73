"""Every backend on this machine against the NumPy reference, and every fast path against
the generic array-API kernel on the same arrays.

Hypothesis draws sizes, dtypes, hyperparameters and a seed for the data (Gaussian vectors
from NumPy's generator, so the arrays are well conditioned and every backend gets the
same numbers). Tolerances: ``backend_cases.py``, justified in ``docs/backends.md``.
"""

from __future__ import annotations

from typing import Any

import conditioning
import numpy as np
from array_api_compat import device
from backend_cases import (
    EXAMPLES,
    FACTORIES,
    GENERIC,
    Backend,
    assert_close,
    dense_inverse_hessian,
    dtypes,
    eps_of,
    rtol,
    seeds,
)
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # this dtype) of every input (tests/support/conditioning.py).
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
