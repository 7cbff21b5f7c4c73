"""Backends available on this machine and the tolerance policy of ``docs/backends.md``.

Each backend is an array namespace plus the two conversions the tests need: NumPy data
in (always a copy), NumPy data out. ``torch-cuda`` and ``cupy`` are listed everywhere and
skip cleanly where no GPU exists, so the same suite is the GPU check.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pytest
from hypothesis import strategies as st

FLOAT64_RTOL = 1e-10
"""Norm-wise relative agreement of float64 results with the NumPy reference."""
FLOAT32_RTOL = 5e-6
"""float32 primitives: above the n * eps bound of a length-n (n <= 40) inner product."""


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any
    put: Callable[[np.ndarray], Any]
    get: Callable[[Any], np.ndarray]


def _numpy() -> Backend:
    return Backend(
        "numpy",
        array_api_compat.array_namespace(np.zeros(1)),
        lambda a: np.array(a, copy=True),
        np.asarray,
    )


def _strict() -> Backend:
    xp = importlib.import_module("array_api_strict")
    return Backend(
        "array-api-strict", xp, lambda a: xp.asarray(a, copy=True), lambda a: np.from_dlpack(a)
    )


def _torch(device: str) -> Backend:
    torch = importlib.import_module("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch-cuda: no CUDA device on this machine")
    return Backend(
        f"torch-{device}",
        array_api_compat.array_namespace(torch.zeros(1)),
        lambda a: torch.tensor(a, device=device),
        lambda t: t.detach().cpu().numpy(),
    )


def _cupy() -> Backend:
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("cupy: no CUDA device on this machine")
    return Backend(
        "cupy", array_api_compat.array_namespace(cupy.zeros(1)), cupy.array, cupy.asnumpy
    )


FACTORIES: dict[str, Callable[[], Backend]] = {
    "numpy": _numpy,
    "torch-cpu": lambda: _torch("cpu"),
    "array-api-strict": _strict,
    "torch-cuda": lambda: _torch("cuda"),
    "cupy": _cupy,
}


def rtol(dtype: Any) -> float:
    """Primitives: norm-wise relative tolerance for ``dtype``."""
    return FLOAT64_RTOL if np.dtype(dtype) == np.float64 else FLOAT32_RTOL


def assert_close(
    actual: Any, expected: Any, tolerance: float, what: str, scale: Any = None
) -> None:
    """``max|actual - expected| <= tolerance * max(scale)``, in float64.

    ``scale`` is the magnitude of the terms the result was computed from (``|a| + |b|``
    for ``a + b``, ``|P| |x|`` for ``P x``): rounding errors are bounded relative to it,
    not to a result that cancelled. It defaults to ``|expected|``.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    if expected.size == 0:
        return
    assert np.all(np.isfinite(actual) == np.isfinite(expected)), what
    finite = np.isfinite(expected)
    magnitude = np.abs(expected[finite]) if scale is None else np.abs(np.asarray(scale))
    scale = max(float(np.max(magnitude, initial=0.0)), np.finfo(np.float64).tiny)
    error = float(np.max(np.abs(actual[finite] - expected[finite]), initial=0.0)) / scale
    log = os.environ.get("MLBFGS_TOLERANCE_LOG")
    if log:  # measuring the errors behind the tolerances of docs/backends.md
        with open(log, "a") as out:
            out.write(f"{what.split(' after ')[0]}\t{tolerance:g}\t{error:.3g}\n")
    assert error <= tolerance, f"{what}: relative error {error:.3g} > {tolerance:.3g}"


GENERIC = ("numpy", "array-api-strict")
"""Backends that run the generic kernels on NumPy's arithmetic: comparing them with the NumPy
engine would compare the code with itself, so they are compared with the independent
float64 references below (every backend is; the others also with the NumPy engine)."""


def eps_of(dtype: Any) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def dense_inverse_hessian(
    s_hist: np.ndarray, y_hist: np.ndarray, gamma: float | None
) -> np.ndarray:
    """Eq (4) applied densely to H_0 = gamma I (gamma None: the newest pair's), in float64:
    an independent reference for the two-loop recursion and the compact form."""
    s_hist, y_hist = s_hist.astype(np.float64), y_hist.astype(np.float64)
    n = s_hist.shape[1]
    if gamma is None:
        gamma = float(s_hist[-1] @ y_hist[-1] / (y_hist[-1] @ y_hist[-1])) if len(s_hist) else 1.0
    h = gamma * np.eye(n)
    for s, y in zip(s_hist, y_hist, strict=True):
        rho = 1.0 / (y @ s)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


EXAMPLES = int(
    os.environ.get("MLBFGS_BACKEND_EXAMPLES")
    or os.environ.get("MLBFGS_HYPOTHESIS_EXAMPLES")
    or (20 if os.environ.get("MLBFGS_HYPOTHESIS", "pinned") == "pinned" else 500)
)
"""Hypothesis examples per property and backend: 20 pinned, 500 in the random profile
(docs/testing.md); MLBFGS_BACKEND_EXAMPLES (to measure tolerances) or
MLBFGS_HYPOTHESIS_EXAMPLES overrides."""

dtypes = st.sampled_from([np.float64, np.float32])
seeds = st.integers(0, 2**32 - 1)
