"""Distributed checks, run on every rank of one launch (MPI or torch.distributed gloo).

Each check compares this rank's parameters with a single-process run (computed on the
same rank) of the same block partition. One launch runs many checks, because every
launch costs seconds; each rank writes ``<out>/rank<r>.json`` listing what passed and
the tracebacks of what failed, for ``tests/test_distributed.py`` to assert on.

    mpiexec -n 4 python tests/distributed/run_checks.py --comm mpi --out DIR [--save CKPT]
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

import mlbfgs
from mlbfgs.checkpoint import load_sharded, save_sharded
from mlbfgs.comm import Communicator, SingleProcessComm
from mlbfgs.distributed import DistributedSetupError

# Uneven tensors (200 elements): blocks of different sizes, several tensors per block.
SHAPES = [(7, 5), (13,), (3, 4, 2), (31,), (6, 6), (1,), (17, 3), (9,)]
STEPS = 30
SETTINGS: dict[str, Any] = {"history": 4, "update_every": 3, "lr": 0.05}
CHECKPOINT_STEPS = (12, 12)  # steps before the save, steps after it
STEP_CONTROLS: dict[str, dict[str, Any]] = {
    "step_norm_none": {"step_norm": "none"},
    "step_norm_unit": {"step_norm": "unit"},
    "released_preset": {"preset": "released"},
}


def initial_params(dtype: Any = np.float32, shapes: list[Any] = SHAPES) -> list[np.ndarray]:
    return [
        np.random.default_rng([999, i]).standard_normal(s).astype(dtype)
        for i, s in enumerate(shapes)
    ]


def gradient(t: int, params: list[np.ndarray], rank: int = 0) -> list[np.ndarray]:
    """A deterministic, curved, noisy gradient; ``rank`` changes only the noise."""
    grads = []
    for i, p in enumerate(params):
        noise = np.random.default_rng([t, i, rank]).standard_normal(p.shape)
        g = (1 + i % 3) * p + 0.5 * np.tanh(p) + 0.1 * noise
        grads.append(g.astype(p.dtype))
    return grads


def run(
    comm: Communicator,
    params: list[Any],
    steps: int,
    grads_of: Callable[[int, list[Any]], list[Any]],
    **options: Any,
) -> mlbfgs.MLBFGS:
    opt = mlbfgs.MLBFGS(params, comm=comm, **{**SETTINGS, **options})
    for _ in range(steps):
        opt.step(grads_of(opt.step_count + 1, params))
    return opt


def same_bits(a: list[Any], b: list[Any], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{what}: params[{i}] differ"


class Checks:
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
        opt = mlbfgs.MLBFGS(initial_params(np.float32, shapes), comm=self.comm, blocks=4, history=5)
        self.report["history_bytes"] = opt.history_bytes()
        self.report["owned_for_memory"] = opt.owned

    def mismatch(self) -> None:
        """Disagreeing ranks raise at construction, on every rank, never hang."""
        last = self.rank == self.size - 1
        cases: list[tuple[dict[str, Any], list[np.ndarray], type, str]] = [
            ({"history": 5 if last else 4}, initial_params(), DistributedSetupError, "history"),
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

    def torch_tensors(self) -> None:
        """torch CPU tensors go through the collectives without copies of the caller's."""
        import torch

        def as_torch(p: list[np.ndarray]) -> list[Any]:
            return [torch.from_numpy(x) for x in p]

        def grads(t: int, p: list[Any]) -> list[Any]:
            return as_torch(gradient(t, [x.numpy() for x in p]))

        params, ref = as_torch(initial_params()), as_torch(initial_params())
        opt = run(self.comm, params, STEPS, grads, blocks=3, average_grads=True)
        partition = [list(layout.pieces) for layout in opt.layouts]
        run(SingleProcessComm(), ref, STEPS, grads, blocks=partition)
        same_bits([p.numpy() for p in params], [p.numpy() for p in ref], "torch")

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

    def torch_optimizer(self) -> None:
        """``mlbfgs.torch.MLBFGS(comm=...)``, two param groups: the same data on every rank
        gives bitwise the one-process optimizer with the same blocks; a group without
        gradients on one rank still joins the collectives (no hang), ranks stay identical."""
        import torch

        import mlbfgs.torch as mt

        def train(comm: Communicator, blocks: list[Any], starve: int | None) -> Any:
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
            ).double()
            groups = [
                {"params": list(net[0].parameters()), "blocks": blocks[0]},
                {"params": list(net[2].parameters()), "blocks": blocks[1], "lr": 0.02},
            ]
            opt = mt.MLBFGS(groups, lr=0.05, history=3, update_every=2, comm=comm, **extra)
            for t in range(1, 13):
                gen = torch.Generator().manual_seed(t)
                x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
                y = torch.randn(8, 3, generator=gen, dtype=torch.float64)
                opt.zero_grad(set_to_none=True)
                ((net(x) - y) ** 2).mean().backward()
                if starve is not None and self.rank == starve:
                    for p in net[2].parameters():
                        p.grad = None
                opt.step()
            return net, opt

        extra = {"average_grads": False}
        net, opt = train(self.comm, [None, None], starve=None)
        partition = [[list(layout.pieces) for layout in e.layouts] for e in opt.engines]
        assert [len(p) for p in partition] == [self.size] * 2, partition  # one block a rank
        ref, _ = train(SingleProcessComm(), partition, starve=None)
        same_bits(
            [p.detach().numpy() for p in net.parameters()],
            [p.detach().numpy() for p in ref.parameters()],
            "torch optimizer",
        )
        extra = {"average_grads": True}
        net, opt = train(self.comm, [None, None], starve=self.size - 1)
        assert all(e.step_count == 12 for e in opt.engines)
        digests = self.comm.allgather_object(
            [p.detach().numpy().tobytes() for p in net.parameters()]
        )
        assert all(d == digests[0] for d in digests), "ranks' parameters differ"

    def torch_rank0_checkpoint(self) -> None:
        """mlbfgs.torch.MLBFGS(comm=...): rank 0 alone saves state_dict() (every block, on
        every rank), every rank loads it into a fresh optimizer and continues bitwise."""
        import torch

        import mlbfgs.torch as mt

        def data(t: int) -> tuple[Any, Any]:
            gen = torch.Generator().manual_seed(t)
            x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
            return x, torch.randn(8, 3, generator=gen, dtype=torch.float64)

        def train(net: Any, opt: Any, steps: range) -> None:
            for t in steps:
                x, y = data(t)
                opt.zero_grad(set_to_none=True)
                ((net(x) - y) ** 2).mean().backward()
                opt.step()

        def make() -> tuple[Any, Any]:
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
            ).double()
            return net, mt.MLBFGS(
                net.parameters(), lr=0.05, history=3, update_every=2, comm=self.comm
            )

        path = Path(self.args.out) / "torch-optimizer.pt"
        net, opt = make()
        train(net, opt, range(1, 9))
        saved = opt.state_dict()
        if self.rank == 0:
            torch.save({"net": net.state_dict(), "opt": saved}, path)
        self.comm.allgather_object(None)
        train(net, opt, range(9, 17))
        twin, opt2 = make()
        checkpoint = torch.load(path, weights_only=True)
        twin.load_state_dict(checkpoint["net"])
        opt2.load_state_dict(checkpoint["opt"])
        train(twin, opt2, range(9, 17))
        same_bits(
            [p.detach().numpy() for p in net.parameters()],
            [p.detach().numpy() for p in twin.parameters()],
            "resumed from rank 0's file",
        )

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
    # MPIComm and TorchComm end the job on an uncaught exception (tests/test_faults.py).
    checks.report["exit_hook"] = sys.excepthook is not sys.__excepthook__
    checks.check("default_blocks", checks.default_blocks)
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
    os._exit(0)  # skip interpreter teardown (torch/MPI finalisation costs seconds)


if __name__ == "__main__":
    main()
