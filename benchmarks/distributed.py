"""Distributed mL-BFGS: how evenly blocks spread over ranks (computed, for p up to 1024:
``benchmarks/balance.py``), then memory, traffic and step time on this machine for
p = 1, 2, 4.

    .venv/bin/python benchmarks/distributed.py [--ranks 1 2 4] [--tensors 8] [--side 256]
        [--steps 40]

Launches itself with the virtual environment's ``mpiexec`` once per p. The model is
``--tensors`` float32 matrices of ``side x side`` in as many curvature blocks, so every p
runs the same partition (the same work in total) and blocks divide evenly among ranks.
Each rank measures its curvature-history bytes and the time of ``opt.step`` (slowest
rank, median over ``--steps`` preconditioned steps); the bytes each rank sends per step
are counted from the element counts the optimizer hands to its two collectives, for a
bandwidth-optimal (ring) reduce-scatter and all-gather, beside the same count for an
all-reduce of the full gradient, which the same run also times. Ratios are against p = 1
measured in the same invocation. On a 2-core machine p = 4 oversubscribes the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# One BLAS thread per rank by default: p ranks of several threads each would fight over
# the cores and time the contention rather than the optimizer.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class CountingComm:
    """An ``MPIComm`` that records the element counts of each collective it runs."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.rank, self.size = inner, inner.rank, inner.size
        self.sent_elements = 0

    def allgather_object(self, obj: Any) -> list[Any]:
        return list(self.inner.allgather_object(obj))

    def reduce_scatter(self, send: Any, recv: Any, counts: Sequence[int]) -> None:
        self.sent_elements += sum(counts) - counts[self.rank]  # every segment but its own
        self.inner.reduce_scatter(send, recv, counts)

    def allgatherv(self, buffer: Any, counts: Sequence[int]) -> None:
        self.sent_elements += sum(counts) - counts[self.rank]  # a ring forwards p - 1 segments
        self.inner.allgatherv(buffer, counts)


def worker(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    import mlbfgs
    from mlbfgs.comm import MPIComm, SingleProcessComm

    world = MPI.COMM_WORLD
    size = world.Get_size()
    comm = CountingComm(MPIComm()) if size > 1 else SingleProcessComm()
    rng = np.random.default_rng(0)
    shapes = [(args.side, args.side)] * args.tensors
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    curvature = [rng.uniform(0.5, 2.0, s).astype(np.float32) for s in shapes]
    opt = mlbfgs.MLBFGS(
        params,
        lr=0.01,
        history_size=args.history_size,
        update_every=5,
        blocks=args.tensors,
        comm=comm,
    )

    def grads(t: int) -> list[np.ndarray]:
        noise = np.float32(0.01 * ((t * 7919) % 13 - 6))
        return [c * p + noise for c, p in zip(curvature, params, strict=True)]

    warm = 2 * 5 + 10  # past the SGD warm-up: every timed step preconditions
    for _ in range(warm):
        opt.step(grads(opt.step_count + 1))
    if isinstance(comm, CountingComm):
        comm.sent_elements = 0
    times = []
    for _ in range(args.steps):
        g = grads(opt.step_count + 1)
        world.Barrier()
        began = time.perf_counter()
        opt.step(g)
        times.append(time.perf_counter() - began)
    slowest = np.max(world.allgather(np.asarray(times)), axis=0)
    d = sum(p.size for p in params)
    flat = np.ones(d, dtype=np.float32)
    reduce_times = []
    for _ in range(args.steps if size > 1 else 0):
        world.Barrier()
        began = time.perf_counter()
        world.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        reduce_times.append(time.perf_counter() - began)
    sent = getattr(comm, "sent_elements", 0) * 4 / args.steps
    row = {
        "p": size,
        "history_bytes": max(world.allgather(opt.history_bytes())),
        "sent_bytes": max(world.allgather(sent)),
        "allreduce_bytes": 2 * (size - 1) * d * 4 / size,
        "step_ms": 1000 * statistics.median(slowest),
        "allreduce_ms": 1000 * statistics.median(reduce_times) if reduce_times else 0.0,
        "blocks_per_rank": len(opt.owned),
        "d": d,
    }
    if world.Get_rank() == 0:
        Path(args.out).write_text(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--history-size", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    import balance  # the computed table: no MPI needed

    balance.main()
    print()
    mpiexec = Path(sys.executable).parent / "mpiexec"
    rows = []
    for p in args.ranks:
        out = Path(f"/tmp/mlbfgs-bench-distributed-{p}.json")
        options = ["--tensors", str(args.tensors), "--side", str(args.side)]
        options += ["--history-size", str(args.history_size), "--steps", str(args.steps)]
        subprocess.run(
            [str(mpiexec), "-n", str(p), sys.executable, __file__, "--worker", "--out", str(out)]
            + options,
            check=True,
            timeout=600,
            env={**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(args.threads))},
        )
        rows.append(json.loads(out.read_text()))
    base = rows[0]
    print(
        f"{base['d']} float32 parameters in {args.tensors} blocks, "
        f"history M = {args.history_size}, "
        f"median of {args.steps} preconditioned steps (slowest rank), {args.threads} BLAS "
        f"thread(s) per rank, {os.cpu_count()} CPU cores"
    )
    header = (
        f"{'p':>2} {'blocks/rank':>11} {'history B/rank':>15} {'vs p=1':>7} "
        f"{'sent B/step':>12} {'all-reduce B':>13} {'sent/AR':>8} "
        f"{'step ms':>8} {'vs p=1':>7} {'AR ms':>7}"
    )
    print(header)
    for row in rows:
        ratio = f"{row['sent_bytes'] / row['allreduce_bytes']:.2f}" if row["p"] > 1 else "-"
        print(
            f"{row['p']:>2} {row['blocks_per_rank']:>11} {row['history_bytes']:>15,} "
            f"{row['history_bytes'] / base['history_bytes']:>7.3f} {row['sent_bytes']:>12,.0f} "
            f"{row['allreduce_bytes']:>13,.0f} {ratio:>8} {row['step_ms']:>8.2f} "
            f"{row['step_ms'] / base['step_ms']:>7.2f} {row['allreduce_ms']:>7.2f}"
        )


if __name__ == "__main__":
    main()
