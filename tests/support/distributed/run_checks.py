"""Distributed checks, run on every rank of one launch (MPI or torch.distributed gloo).

Each check compares this rank's parameters with a single-process run (computed on the
same rank) of the same block partition. One launch runs many checks, because every
launch costs seconds; each rank writes ``<out>/rank<r>.json`` listing what passed and
the tracebacks of what failed, for ``tests/comm/test_ranks.py`` to assert on.

    mpiexec -n 4 python tests/support/distributed/run_checks.py --comm mpi --out DIR [--save CKPT]
    (torch) RANK=r WORLD_SIZE=p MASTER_ADDR=127.0.0.1 MASTER_PORT=... python ... --comm torch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from problem import (
    CHECKPOINT_STEPS,
    MLP_SHAPES,
    SETTINGS,
    SHAPES,
    STEPS,
    gradient,
    initial_params,
    run,
    same_bits,
)
from torch_checks import TorchChecks

import mlbfgs
from mlbfgs.checkpoint import load_sharded, save_sharded
from mlbfgs.comm import Communicator, SingleProcessComm
from mlbfgs.engine.distributed import DistributedSetupError

STEP_CONTROLS: dict[str, dict[str, Any]] = {
    "step_norm_none": {"step_norm": "none"},
    "step_norm_unit": {"step_norm": "unit"},
    "released_preset": {"preset": "released"},
}


class Checks(TorchChecks):
    def __init__(self, comm: Communicator, args: argparse.Namespace) -> None:
        self.comm, self.args = comm, args
        self.rank, self.size = comm.rank, comm.size
        self.report: dict[str, Any] = {"passed": [], "failed": {}, "rank": self.rank}

    def check(self, name: str, body: Callable[[], None]) -> None:
        try:
            body()
            self.report["passed"].append(name)
        except Exception:
            self.report["failed"][name] = traceback.format_exc()

    def bitwise(self, blocks: Any, average: bool, dtype: Any = np.float32, **options: Any) -> None:
        """p ranks fed the same gradients == one process with the same partition."""
        params = initial_params(dtype)
        opt = run(
            self.comm, params, STEPS, gradient, blocks=blocks, average_grads=average, **options
        )
        partition = [list(layout.pieces) for layout in opt.layouts]
        ref = initial_params(dtype)
        ref_opt = run(SingleProcessComm(), ref, STEPS, gradient, blocks=partition, **options)
        same_bits(params, ref, f"blocks={blocks}")
        assert opt.step_count == STEPS
        pushed = sum(s["pairs_pushed"] for s in opt.stats())
        mine = sum(s["pairs_pushed"] for s in ref_opt.stats() if s["block"] in opt.owned)
        assert pushed == mine and (pushed > 0 or not opt.owned), (pushed, mine)
        owned = self.comm.allgather_object(opt.owned)
        assert sorted(b for blocks_ in owned for b in blocks_) == list(range(len(partition)))
        assert all(
            blocks_ == list(range(blocks_[0], blocks_[-1] + 1)) for blocks_ in owned if blocks_
        )

    def default_blocks(self) -> None:
        self.bitwise(None, average=False)
        opt = mlbfgs.MLBFGS(initial_params(), comm=self.comm, **SETTINGS)
        assert len(opt.layouts) == self.size and len(opt.owned) == 1, opt.assignment

    def default_blocks_model(self) -> None:
        """``blocks=None`` on p ranks against one process at its own defaults, each rank
        fed the same gradients: per problem, (blocks on p ranks, blocks on one process,
        bitwise equal parameters). The MLP's eight blocks are a property of the model; the
        200-element problem is one block on one process and one block per rank here."""
        equal = {}
        for name, shapes in (("85,002 elements", MLP_SHAPES), ("200 elements", SHAPES)):
            params = initial_params(np.float32, shapes)
            opt = run(self.comm, params, STEPS, gradient, average_grads=False)
            ref = initial_params(np.float32, shapes)
            ref_opt = run(SingleProcessComm(), ref, STEPS, gradient)
            same = all(np.array_equal(a, b) for a, b in zip(params, ref, strict=True))
            equal[name] = [len(opt.layouts), len(ref_opt.layouts), same]
        self.report["default_blocks_equal"] = equal

    def averaged(self) -> None:
        """Different local gradients == one process fed their mean (float tolerance)."""
        params = initial_params(np.float64)
        opt = run(self.comm, params, STEPS, lambda t, p: gradient(t, p, self.rank), blocks=5)
        partition = [list(layout.pieces) for layout in opt.layouts]

        def mean(t: int, p: list[np.ndarray]) -> list[np.ndarray]:
            every = [gradient(t, p, r) for r in range(self.size)]
            return [sum(g[i] for g in every) / self.size for i in range(len(p))]

        ref = initial_params(np.float64)
        run(SingleProcessComm(), ref, STEPS, mean, blocks=partition)
        for i, (x, y) in enumerate(zip(params, ref, strict=True)):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12, err_msg=f"params[{i}]")
        assert not all(
            np.array_equal(x, y) for x, y in zip(params, initial_params(np.float64), strict=True)
        )

    def memory(self) -> None:
        """Four equal blocks of 1024 elements: this rank holds 4/p of them."""
        shapes = [(64, 16)] * 4
        opt = mlbfgs.MLBFGS(
            initial_params(np.float32, shapes), comm=self.comm, blocks=4, history_size=5
        )
        self.report["history_bytes"] = opt.history_bytes()
        self.report["owned_for_memory"] = opt.owned

    def mismatch(self) -> None:
        """Disagreeing ranks raise at construction, on every rank, never hang."""
        last = self.rank == self.size - 1
        cases: list[tuple[dict[str, Any], list[np.ndarray], type, str]] = [
            (
                {"history_size": 5 if last else 4},
                initial_params(),
                DistributedSetupError,
                "history_size",
            ),
            ({}, initial_params()[: 7 if last else 8], DistributedSetupError, "parameter_count"),
            (
                {},
                initial_params(np.float64 if last else np.float32),
                DistributedSetupError,
                "dtypes",
            ),
            ({"blocks": 3 if last else 2}, initial_params(), DistributedSetupError, "blocks"),
        ]
        for options, params, error, word in cases:
            try:
                mlbfgs.MLBFGS(params, comm=self.comm, **options)
            except error as caught:
                assert word in str(caught), str(caught)
            else:
                raise AssertionError(f"no error for a rank-dependent {word}")
        try:  # one rank's set-up fails: it raises its own error, the others learn of it
            mlbfgs.MLBFGS(initial_params(), comm=self.comm, lr=-1.0 if last else 0.1)
        except ValueError as caught:
            assert "lr" in str(caught), str(caught)
            assert last or f"rank {self.size - 1}" in str(caught), str(caught)
        else:
            raise AssertionError("no error when one rank's set-up fails")

    def nonfinite(self) -> None:
        """A NaN on one rank: "raise" raises on every rank, nothing changed; "skip" keeps
        every rank's parameters identical (the owner skips that block, the rest step)."""
        last = self.size - 1

        def poisoned(t: int, p: list[np.ndarray]) -> list[np.ndarray]:
            grads = gradient(t, p, self.rank)
            if t == 8 and self.rank == last:
                grads[-1][0] = np.nan  # in the last block, which the last rank owns
            return grads

        for average in (False, True):
            params = initial_params()
            opt = run(self.comm, params, 7, poisoned, on_nonfinite="raise", average_grads=average)
            before, state = [p.copy() for p in params], opt.state_dict()
            try:
                opt.step(poisoned(8, params))
            except mlbfgs.NonFiniteGradientError as caught:
                assert f"ranks [{last}]" in str(caught), str(caught)
            else:
                raise AssertionError(f"no error on rank {self.rank} (average={average})")
            same_bits(params, before, "after a refused step")
            assert opt.step_count == 7 and opt.state_dict().keys() == state.keys()
        # The last rank's NaN in block 0, which rank 0 owns: averaging carries it to rank 0,
        # and every rank's error names the last rank as its source.
        params = initial_params()
        opt = run(self.comm, params, 2, gradient, on_nonfinite="raise", blocks=self.size)
        grads = gradient(3, params, self.rank)
        if self.rank == last:
            grads[0][0, 0] = np.inf
        try:
            opt.step(grads)
        except mlbfgs.NonFiniteGradientError as caught:
            message = str(caught)
            assert f"owned by rank(s) [0]; the NaN or infinity came from ranks [{last}]" in message
        else:
            raise AssertionError(f"no error on rank {self.rank} for another rank's NaN")
        params = initial_params()
        opt = run(self.comm, params, 12, poisoned, blocks=4)
        skipped = {s["block"]: s["skipped_steps"] for s in opt.stats()}
        assert sum(skipped.values()) == (1 if 3 in opt.owned else 0), skipped
        assert skipped.get(3, 1) == 1, skipped
        digests = self.comm.allgather_object([p.tobytes() for p in params])
        assert all(d == digests[0] for d in digests), "ranks' parameters differ"

    def datatypes(self) -> None:
        """MPIComm makes each MPI datatype once: mpi4py's from_numpy_dtype builds a new one
        at every call and never frees it (RSS grew by about 0.5 KB per step)."""
        from mpi4py.util import dtlib

        calls: list[Any] = []
        original = dtlib.from_numpy_dtype
        dtlib.from_numpy_dtype = lambda dtype: calls.append(dtype) or original(dtype)
        try:
            run(mlbfgs.comm.MPIComm(), initial_params(), 10, gradient, blocks=self.size)
        finally:
            dtlib.from_numpy_dtype = original
        assert len(calls) == 1, calls

    def save(self) -> None:
        """Run, save per rank, continue: the continuation is what a resume must reproduce."""
        before, after = CHECKPOINT_STEPS
        params = initial_params()
        opt = run(self.comm, params, before, gradient, average_grads=True)
        save_sharded(opt, self.args.save)
        if self.rank == 0:
            np.savez(Path(self.args.save) / "params.npz", *params)
        for _ in range(after):
            opt.step(gradient(opt.step_count + 1, params))
        if self.rank == 0:
            np.savez(Path(self.args.save) / f"continued-on-{self.size}.npz", *params)

    def resume(self) -> None:
        _, after = CHECKPOINT_STEPS
        folder = Path(self.args.resume)
        params = resume_and_continue(self.comm, folder, after)
        saved = np.load(next(folder.glob("continued-on-*.npz")))
        same_bits(params, [saved[f"arr_{i}"] for i in range(len(params))], "resumed")


def resume_and_continue(comm: Communicator, folder: Path, steps: int) -> list[np.ndarray]:
    start = np.load(folder / "params.npz")
    params = [start[f"arr_{i}"] for i in range(len(SHAPES))]
    opt = mlbfgs.MLBFGS(params, comm=comm, **SETTINGS)
    load_sharded(opt, folder)
    for _ in range(steps):
        opt.step(gradient(opt.step_count + 1, params))
    return params


def make_comm(kind: str) -> Communicator:
    if kind == "mpi":
        return mlbfgs.comm.MPIComm()
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return mlbfgs.comm.TorchComm()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comm", choices=["mpi", "torch"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--torch", action="store_true", help="also check torch tensors")
    parser.add_argument("--save")
    parser.add_argument("--resume")
    args = parser.parse_args()
    comm = make_comm(args.comm)
    checks = Checks(comm, args)
    # MPIComm and TorchComm end the job on an uncaught exception (tests/checkpoint/test_faults.py).
    checks.report["exit_hook"] = sys.excepthook is not sys.__excepthook__
    checks.check("default_blocks", checks.default_blocks)
    checks.check("default_blocks_model", checks.default_blocks_model)
    checks.check("more_blocks_than_ranks", lambda: checks.bitwise(6, average=False))
    checks.check("explicit_blocks", lambda: checks.bitwise([[7, 0], [1, 2, 3], [5], [4, 6]], False))
    checks.check("same_grads_averaged", lambda: checks.bitwise(5, average=True))
    # "unit" sums one number per block over every rank (its own small all-gather).
    for name, options in STEP_CONTROLS.items():
        checks.check(name, lambda o=options: checks.bitwise(6, average=True, **o))
    checks.check("averaged", checks.averaged)
    checks.check("memory", checks.memory)
    checks.check("mismatch", checks.mismatch)
    checks.check("nonfinite", checks.nonfinite)
    if args.torch:
        checks.check("torch_tensors", checks.torch_tensors)
        checks.check("torch_optimizer", checks.torch_optimizer)
        checks.check("torch_rank0_checkpoint", checks.torch_rank0_checkpoint)
    if args.comm == "mpi":
        checks.check("datatypes", checks.datatypes)
    if args.save:
        checks.check("save", checks.save)
    if args.resume:
        checks.check("resume", checks.resume)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{comm.rank}.json").write_text(json.dumps(checks.report, indent=1))
    sys.stdout.flush()
    # Every rank's report is on disk before any rank leaves: a rank that exits without
    # MPI_Finalize makes mpiexec kill the others, possibly in the middle of their write.
    comm.allgather_object(True)
    if args.comm == "mpi":
        # A normal exit, where mpi4py calls MPI_Finalize. With os._exit(0) here, mpiexec
        # killed a rank still exiting (signal 9, exit code 9) in 4 of 10 four-rank
        # launches of a scratch script whose one rank left 2 s after the others (0 of 10
        # with a normal exit); one such kill failed a clean CI run.
        return
    # gloo: skip the interpreter's teardown, where gloo's threads can abort a rank whose
    # report is written ("terminate called without an active exception").
    os._exit(0)


if __name__ == "__main__":
    main()
