"""Preconditioner bandwidth of a backend, as a fraction of the device's measured bandwidth.

One step of ``d = H g`` in compact form reads the ``(2M, n)`` history twice and g, and
writes d: ``(4M n + 3n) * itemsize`` bytes. This script times it (fused backend kernels
and the generic array-API kernels), a plain two-loop, and two references over a buffer
the size of the history (a sum: read bandwidth; a copy: read + write), all in one run,
and prints ratios only. ``benchmarks/gpu_check.sh`` runs it for torch-cuda and
CuPy; ``--device cpu`` runs the same measurement on the CPU (to check the script).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from mlbfgs.backends import kernels_for
from mlbfgs.core import CurvatureHistory, Kernels, compact_form, precondition, two_loop


def namespace(
    backend: str, device: str
) -> tuple[Any, Callable[[np.ndarray], Any], Callable[[], None]]:
    """(xp, numpy -> device array, synchronize) for ``backend`` on ``device``."""
    if backend == "torch":
        import torch

        def sync() -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        xp = array_api_compat.array_namespace(torch.zeros(1))
        return xp, lambda a: torch.tensor(a, device=device), sync
    if backend == "cupy":
        import cupy

        xp = array_api_compat.array_namespace(cupy.zeros(1))
        return xp, cupy.asarray, lambda: cupy.cuda.Device().synchronize()
    xp = array_api_compat.array_namespace(np.zeros(1))
    return xp, np.asarray, lambda: None


def seconds(run: Callable[[], object], sync: Callable[[], None], repeats: int) -> float:
    """Median wall time of one call, each sample averaging ``repeats`` calls."""
    run()
    sync()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        sync()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["torch", "cupy", "numpy"], default="torch")
    parser.add_argument("--device", default="cuda", help="torch device (ignored for cupy)")
    parser.add_argument("--n", type=int, default=1 << 24, help="parameters in the block")
    parser.add_argument("--history-size", type=int, default=10, help="M")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--history-dtype", help="also time a history stored in this dtype (bfloat16, float16)"
    )
    args = parser.parse_args()

    xp, put, sync = namespace(args.backend, args.device)
    n, m = args.n, args.history_size
    rng = np.random.default_rng(0)
    curvature = put(rng.uniform(0.5, 2.0, n).astype(np.float32))
    g = put(rng.standard_normal(n).astype(np.float32))
    fast = kernels_for(xp)
    history = CurvatureHistory.empty(xp, m, n, g.dtype, array_api_compat.device(g))
    for _ in range(m):
        s = put(rng.standard_normal(n).astype(np.float32))
        history.push(s, curvature * s, fast)
    form = compact_form(xp, history)
    s_hist, y_hist = history.chronological(xp)
    # The reference copy moves as many bytes as the history, so caches flatter neither side.
    destination = xp.empty_like(history.pairs)
    itemsize = 4

    def compact(kernels: Kernels) -> Callable[[], object]:
        return lambda: precondition(history, form, g, kernels.project(history.pairs, g), kernels)

    def copy() -> None:
        destination[...] = history.pairs

    history_bytes = 2 * m * n * itemsize
    copy_bw = 2 * history_bytes / seconds(copy, sync, args.repeats)
    read_bw = history_bytes / seconds(lambda: xp.sum(history.pairs), sync, args.repeats)
    needed = (4 * m * n + 3 * n) * itemsize
    t_fast = seconds(compact(fast), sync, args.repeats)
    t_generic = seconds(compact(Kernels(xp)), sync, args.repeats)
    t_loop = seconds(lambda: two_loop(g, s_hist, y_hist), sync, max(1, args.repeats // 4))
    print(f"backend {args.backend} on {array_api_compat.device(g)}: n = {n}, M = {m}, float32")
    for name, t in ((type(fast).__name__, t_fast), ("generic Kernels", t_generic)):
        print(
            f"{name} preconditioner: {needed / t / read_bw:.2f} of read bandwidth, "
            f"{needed / t / copy_bw:.2f} of copy bandwidth"
        )
    print(f"fused vs generic speed-up:        {t_generic / t_fast:.2f}x")
    print(f"compact form vs two-loop speed-up: {t_loop / t_fast:.2f}x")
    if args.history_dtype:
        narrow = CurvatureHistory.empty(
            xp, m, n, getattr(xp, args.history_dtype), array_api_compat.device(g)
        )
        for slot in history.order:
            narrow.push(history.pairs[slot], history.pairs[m + slot], fast)
        narrow_form = compact_form(xp, narrow)
        t_narrow = seconds(
            lambda: precondition(narrow, narrow_form, g, fast.project(narrow.pairs, g), fast),
            sync,
            args.repeats,
        )
        print(f"{args.history_dtype} history: {t_narrow / t_fast:.2f}x the float32 history's time")


if __name__ == "__main__":
    main()
