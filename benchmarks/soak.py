"""Soak: 100,000 steps with periodic checkpoints; time per step and memory must stay flat.

    python benchmarks/soak.py [--steps 100000] [--window 10000] [--every 10000] [--keep 2]
    mpiexec -n 2 python benchmarks/soak.py --comm mpi          # and ranks must stay identical
    python benchmarks/soak.py --tracemalloc                    # Python heap instead of RSS

A small noisy quadratic (four float64 tensors, 2,000 elements, history 5, a curvature
pair every 10 steps; in float32 this run diverges near its noise floor after about 9,000
steps on two blocks, which would soak the skip path rather than the step) is stepped
``--steps`` times; every ``--every`` steps the optimizer is saved with
``save_sharded(..., keep=--keep)`` into a temporary directory, and on several ranks the
ranks compare digests of their parameters and step counts. Printed: time per step over
the first full window after warm-up and over the last window, and their ratio (late /
early; about 1 when nothing accumulates); resident memory (or, with ``--tracemalloc``,
traced Python memory, slower to run) at the end of that first window and at the end, and
the difference; the checkpoint sets left on disk (``keep``); whether all ranks held the
same parameters at every comparison; and the steps skipped. Exits non-zero if the ranks
differed, a step was skipped, a parameter is not finite, or the directory does not hold
exactly ``keep`` sets. A benchmark, not a test: the ratios are for a person to read
(timings on a shared machine vary).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

import mlbfgs
from mlbfgs.checkpoint import save_sharded
from mlbfgs.comm import Communicator, SingleProcessComm

SHAPES = [(20, 25), (500,), (25, 20), (500,)]


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc``; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory(traced: bool) -> int:
    return tracemalloc.get_traced_memory()[0] if traced else resident_bytes()


def digest(params: list[np.ndarray], step: int) -> str:
    hasher = hashlib.sha256(str(step).encode())
    for p in params:
        hasher.update(p.tobytes())
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=10_000, help="steps between checkpoints")
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--comm", choices=["single", "mpi"], default="single")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    if args.steps < 3 * args.window:
        parser.error("--steps must be at least 3 windows (warm-up, early, late)")
    comm: Communicator = mlbfgs.comm.MPIComm() if args.comm == "mpi" else SingleProcessComm()

    rng = np.random.default_rng(0)  # the same stream on every rank: identical gradients
    params = [
        np.random.default_rng([1, i]).standard_normal(s, np.float64) for i, s in enumerate(SHAPES)
    ]
    curvature = [np.linspace(0.5, 5.0, p.size, dtype=np.float64).reshape(p.shape) for p in params]
    opt = mlbfgs.MLBFGS(params, lr=0.05, history_size=5, update_every=10, comm=comm)
    folder = Path(
        comm.allgather_object(tempfile.mkdtemp(prefix="mlbfgs-soak-") if comm.rank == 0 else "")[0]
    )

    if args.tracemalloc:
        tracemalloc.start()
    marks: dict[str, tuple[float, int]] = {}
    identical = True
    start = time.perf_counter()
    for t in range(1, args.steps + 1):
        grads = [
            c * p + 0.01 * rng.standard_normal(p.shape)
            for c, p in zip(curvature, params, strict=True)
        ]
        opt.step(grads)
        if t % args.every == 0:
            paused = time.perf_counter()
            save_sharded(opt, folder, keep=args.keep)
            mine = digest(params, opt.step_count)
            identical &= all(d == mine for d in comm.allgather_object(mine))
            start += time.perf_counter() - paused  # checkpoints are not steps
        if t in (args.window, 2 * args.window, args.steps - args.window, args.steps):
            marks[str(t)] = (time.perf_counter() - start, memory(args.tracemalloc))

    (a, _), (b, early_memory) = marks[str(args.window)], marks[str(2 * args.window)]
    (c, _), (d, late_memory) = marks[str(args.steps - args.window)], marks[str(args.steps)]
    early, late = (b - a) / args.window, (d - c) / args.window
    sets = sorted(path.name for path in folder.iterdir())
    skipped = sum(comm.allgather_object(sum(s["skipped_steps"] for s in opt.stats())))
    finite = all(bool(np.isfinite(p).all()) for p in params)
    if comm.rank == 0:
        what = "traced Python memory" if args.tracemalloc else "resident memory"
        print(f"{args.steps} steps on {comm.size} rank(s), {sum(p.size for p in params)} float64")
        print(
            f"time per step: early {early * 1e6:.1f} us, late {late * 1e6:.1f} us, "
            f"late/early {late / early:.3f}"
        )
        print(
            f"{what}: early {early_memory / 2**20:.2f} MiB, end {late_memory / 2**20:.2f} MiB, "
            f"growth {(late_memory - early_memory) / 2**20:+.3f} MiB "
            f"(end/early {late_memory / max(early_memory, 1):.3f})"
        )
        print(f"checkpoint sets on disk: {len(sets)} (keep={args.keep}): {sets}")
        print(f"ranks identical at every checkpoint: {identical}")
        print(f"skipped steps: {skipped}, parameters finite: {finite}")
    comm.allgather_object(None)
    if comm.rank == 0:
        for path in folder.rglob("*"):
            if path.is_file():
                path.unlink()
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir()
        folder.rmdir()
    expected_sets = min(args.keep, args.steps // args.every)
    healthy = identical and finite and skipped == 0 and len(sets) == expected_sets
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
