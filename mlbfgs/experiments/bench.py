"""Measurements behind ``mlbfgs bench``: every number is a ratio taken in one run.

(1) the compact-form preconditioner against the classic two-loop recursion and against
the machine's copy bandwidth; (2) a whole training iteration with mL-BFGS against SGD
with momentum; (3) the optimizer's peak memory against the ``2 M n`` of its history.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import MLBFGS
from ..backends import kernels_for
from ..core import CurvatureHistory, compact_form, precondition, two_loop


def best_times(fns: Sequence[Callable[[], object]], rounds: int) -> list[float]:
    """Per function, the fastest of ``rounds`` calls; the functions take turns every round,
    so a background load that comes and goes hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    best = [math.inf] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


class CopyProbe:
    """``np.copyto`` of a large float32 array; bytes moved = read + write."""

    def __init__(self, nbytes: int) -> None:
        self.src = np.ones(nbytes // 4, dtype=np.float32)
        self.dst = np.empty_like(self.src)

    @property
    def bytes_moved(self) -> int:
        return 2 * self.src.nbytes

    def __call__(self) -> None:
        np.copyto(self.dst, self.src)


def filled_history(n: int, m: int, dtype: type, seed: int = 0) -> CurvatureHistory:
    """M pairs with positive curvature (``y = D s + noise``) and their Gram matrices.

    Filled row by row in place, so the peak is the ``(2M, n)`` buffer plus one row.
    """
    rng = np.random.default_rng(seed)
    pairs: np.ndarray = np.empty((2 * m, n), dtype=dtype)
    for i in range(m):
        pairs[i] = rng.standard_normal(n, dtype=np.float32)
    diag: np.ndarray = rng.uniform(0.5, 2.0, n).astype(dtype)
    for i in range(m):
        np.multiply(pairs[i], diag, out=pairs[m + i])
        pairs[m + i] += 0.1 * rng.standard_normal(n, dtype=np.float32).astype(dtype, copy=False)
    s_view, y_view = pairs[:m], pairs[m:]
    return CurvatureHistory(
        pairs=pairs,
        s_dot_y=(s_view @ y_view.T).astype(np.float64),
        y_dot_y=(y_view @ y_view.T).astype(np.float64),
        order=list(range(m)),
    )


@dataclass(frozen=True)
class PreconditionerRow:
    n: int
    m: int
    compact_s: float
    two_loop_s: float
    bytes_moved: int
    copy_bandwidth: float
    """Bytes per second of the copy probe, timed in turn with the two products."""
    max_rel_diff: float

    @property
    def speedup(self) -> float:
        return self.two_loop_s / self.compact_s

    @property
    def bandwidth_fraction(self) -> float:
        return self.bytes_moved / self.compact_s / self.copy_bandwidth


def preconditioner_row(
    n: int, m: int, probe: CopyProbe, rounds: int, dtype: type = np.float32
) -> PreconditionerRow:
    """Time ``H g`` by the compact form (projection included), by the two-loop recursion
    and the copy probe, taking turns."""
    history = filled_history(n, m, dtype)
    kernels = kernels_for(np)
    form = compact_form(np, history)
    g: np.ndarray = np.random.default_rng(1).standard_normal(n, dtype=np.float32).astype(dtype)
    s_hist, y_hist = history.pairs[:m], history.pairs[m:]

    def compact() -> np.ndarray:
        return precondition(history, form, g, kernels.project(history.pairs, g), kernels)

    def classic() -> np.ndarray:
        return two_loop(g, s_hist, y_hist)

    a, b = compact(), classic()
    diff = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
    compact_s, two_loop_s, copy_s = best_times([compact, classic, probe], rounds)
    return PreconditionerRow(
        n=n,
        m=m,
        compact_s=compact_s,
        two_loop_s=two_loop_s,
        bytes_moved=4 * m * n * np.dtype(dtype).itemsize,
        copy_bandwidth=probe.bytes_moved / copy_s,
        max_rel_diff=diff,
    )


@dataclass(frozen=True)
class MemoryRow:
    n: int
    m: int
    peak_bytes: int
    state_bytes: int
    history_bytes: int

    @property
    def peak_ratio(self) -> float:
        return self.peak_bytes / self.history_bytes

    @property
    def state_ratio(self) -> float:
        return self.state_bytes / self.history_bytes


def memory_row(n: int, m: int, update_every: int = 2) -> MemoryRow:
    """Peak bytes NumPy allocates for the optimizer (construction and steps with a full
    history), excluding the caller's parameters and gradients, against ``2 M n`` values."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n, dtype=np.float32)]
    grads = [np.empty_like(params[0]) for _ in range(2)]
    noise = [rng.standard_normal(n, dtype=np.float32) for _ in range(3)]
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        opt = MLBFGS(params, lr=1e-3, history_size=m, update_every=update_every)
        for t in range((m + 3) * update_every):
            g = grads[t % 2]
            g[...] = params[0]
            g += noise[t % 3]
            opt.step([g])
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert opt.stats()[0]["pairs_stored"] == m, opt.stats()
    return MemoryRow(n, m, peak - base, current - base, 2 * m * n * 4)
