"""One rank dies on purpose: during a checkpoint save, or of an uncaught exception.

Launched under ``mpiexec`` by ``tests/checkpoint/test_faults.py`` (and imported by it, for the same
problem in-process)::

    mpiexec -n 3 python tests/support/distributed/faults.py --dir CKPT --kill 1:after_write
    mpiexec -n 2 python tests/support/distributed/faults.py --raise-on 1

``--kill r:point`` makes rank r exit at a named point of ``save_sharded`` (see
``mlbfgs.checkpoint.sharded._reached``), as if killed; at ``mid_write`` its file is cut in half
first. ``--raise-on r`` makes rank r raise inside ``step`` while the others wait in the
step's collective: plain ``python``, no ``-m mpi4py``, so only ``MPIComm``'s exception
hook can end the job.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import mlbfgs
from mlbfgs import checkpoint
from mlbfgs.comm import Communicator

SHAPES = [(7, 5), (13,), (3, 4, 2), (31,), (6, 6), (9,)]
SETTINGS: dict[str, Any] = {"history_size": 3, "update_every": 2, "lr": 0.05}


def initial_params() -> list[np.ndarray]:
    return [np.random.default_rng([7, i]).standard_normal(s) for i, s in enumerate(SHAPES)]


def gradient(t: int, params: list[np.ndarray]) -> list[np.ndarray]:
    return [
        (1 + i % 3) * p + 0.1 * np.random.default_rng([t, i]).standard_normal(p.shape)
        for i, p in enumerate(params)
    ]


def train(comm: Communicator, steps: int, **options: Any) -> mlbfgs.MLBFGS:
    """``steps`` steps; every rank sees the same gradients, so p ranks == one process."""
    params = initial_params()
    opt = mlbfgs.MLBFGS(params, comm=comm, average_grads=False, **{**SETTINGS, **options})
    for _ in range(steps):
        opt.step(gradient(opt.step_count + 1, params))
    return opt


def crash_at(rank: int, point: str, die: Callable[[], None]) -> Callable[[str, int, Path], None]:
    """A ``mlbfgs.checkpoint.sharded._reached`` under which rank ``rank`` dies at ``point``."""

    def hook(name: str, at: int, path: Path) -> None:
        if at == rank and name == point:
            if name == "mid_write":
                os.truncate(path, path.stat().st_size // 2)
            die()

    return hook


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--keep", type=int, default=1)
    parser.add_argument("--kill", help="rank:point")
    parser.add_argument("--raise-on", type=int)
    args = parser.parse_args()
    comm = mlbfgs.comm.MPIComm()
    if args.raise_on is not None:
        params = initial_params()
        opt = mlbfgs.MLBFGS(params, comm=comm, **SETTINGS)  # average_grads: a reduce-scatter
        grads = gradient(1, params)
        if comm.rank == args.raise_on:
            grads = grads[:-1]  # ValueError on this rank only
        opt.step(grads)
    else:
        opt = train(comm, args.steps)
        if args.kill:
            rank, point = args.kill.split(":")
            checkpoint.sharded._reached = crash_at(int(rank), point, lambda: os._exit(3))
        checkpoint.save_sharded(opt, args.dir, keep=args.keep)
    comm.allgather_object(True)
    os._exit(0)  # skip interpreter teardown (MPI finalisation costs time)


if __name__ == "__main__":
    main()
