"""DTensor checks on gloo, run on every rank of one launch: FSDP2 and tensor parallelism
in ``mlbfgs.torch.MLBFGS`` (``mlbfgs/torch/dtensor.py``), for ``tests/torch/test_torch_dtensor.py``.

Each check trains with sharded parameters and, on the same rank, a plain copy of the model
with one process whose blocks are every rank's shards in rank order, fed the same
gradients (the sharded gradients gathered with ``full_tensor()``): the two must agree
bitwise, because blocks never mix and the only sum over blocks (``step_norm="unit"``) is
summed in the same order. Each rank writes ``<out>/rank<r>.json`` (what passed, the
tracebacks of what failed).

    RANK=r WORLD_SIZE=p MASTER_ADDR=127.0.0.1 MASTER_PORT=... python dtensor_checks.py \
        --out DIR [--save CKPT | --resume CKPT]
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

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    parallelize_module,
)

import mlbfgs.torch as mt
from mlbfgs.engine import NonFiniteGradientError

HYPER: dict[str, Any] = {"history_size": 3, "update_every": 2}
STEPS = 12


def mlp(seed: int = 0) -> torch.nn.Module:
    """An MLP whose first layer has rows for every rank (so every rank has a block)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()


def batch(t: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * t + rank)
    x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    return x, torch.sin(x[:, :3]) + 0.5 * x[:, 3:]


def shard_blocks(model: torch.nn.Module, size: int) -> list[list[tuple[int, int, int]]]:
    """Every rank's dim-0 shards (``torch.chunk``, as FSDP2 and Shard(0) split) as element
    ranges of the flattened full parameters: one block per rank, in rank order."""
    blocks: list[list[tuple[int, int, int]]] = [[] for _ in range(size)]
    for i, p in enumerate(model.parameters()):
        row, start = p[0].numel() if p.dim() > 1 else 1, 0
        for r, chunk in enumerate(torch.chunk(torch.arange(p.shape[0]), size)):
            if len(chunk):
                blocks[r].append((i, start, start + len(chunk) * row))
                start += len(chunk) * row
    return blocks


def same_bits(sharded: list[torch.Tensor], plain: list[torch.Tensor], what: str) -> None:
    for k, (a, b) in enumerate(zip(sharded, plain, strict=True)):
        full = a.full_tensor() if isinstance(a, DTensor) else a
        if not torch.equal(full.detach(), b.detach()):
            diff = (full - b).abs().max().item()
            raise AssertionError(f"{what}: param {k} differs by {diff}")


def loss_of(model: torch.nn.Module, t: int, rank: int) -> torch.Tensor:
    x, y = batch(t, rank)
    return torch.nn.functional.mse_loss(model(x), y)


class Checks:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.mesh = init_device_mesh("cpu", (self.size,))
        self.report: dict[str, Any] = {"passed": [], "failed": {}, "rank": self.rank}

    def check(self, name: str, body: Callable[[], None]) -> None:
        if os.environ.get("MLBFGS_CHECKS_VERBOSE"):
            print(f"rank {self.rank}: {name}", file=sys.stderr, flush=True)
        try:
            body()
            self.report["passed"].append(name)
        except Exception:
            self.report["failed"][name] = traceback.format_exc()

    def fsdp(self, seed: int = 0) -> torch.nn.Module:
        model = mlp(seed)
        for layer in (model[0], model[2]):
            fully_shard(layer, mesh=self.mesh)
        fully_shard(model, mesh=self.mesh)
        return model

    def train_both(self, steps: int, **options: Any) -> tuple[list[float], Any]:
        """FSDP2 and the one-process twin, bitwise equal after every step."""
        model, twin = self.fsdp(), mlp()
        opt = mt.MLBFGS(model.parameters(), lr=0.1, **HYPER, **options)
        ref = mt.MLBFGS(
            twin.parameters(), lr=0.1, blocks=shard_blocks(twin, self.size), **HYPER, **options
        )
        losses = []
        for t in range(1, steps + 1):
            loss = loss_of(model, t, self.rank)
            loss.backward()
            for p, q in zip(model.parameters(), twin.parameters(), strict=True):
                q.grad = p.grad.full_tensor()
            opt.step()
            ref.step()
            opt.zero_grad()
            losses.append(loss.item())
            same_bits(list(model.parameters()), list(twin.parameters()), f"step {t}")
        return losses, opt

    def fsdp_trains_and_equals_one_process(self) -> None:
        losses, opt = self.train_both(40)
        assert losses[-1] < 0.5 * losses[0], losses
        assert opt.stats()[0][0]["pairs_pushed"] > 0, opt.stats()
        self.report["losses"] = [losses[0], losses[-1]]

    def step_norm_unit_sums_over_ranks(self) -> None:
        self.train_both(STEPS, step_norm="unit")

    def released_preset(self) -> None:
        self.train_both(STEPS, preset="released")

    def nonfinite_raises_on_every_rank(self) -> None:
        model = self.fsdp()
        opt = mt.MLBFGS(model.parameters(), lr=0.1, on_nonfinite="raise", **HYPER)
        loss_of(model, 1, self.rank).backward()
        before = [p.full_tensor() for p in model.parameters()]
        if self.rank == self.size - 1:
            p = next(model.parameters())
            p.grad.to_local()[0, 0] = float("nan")
        try:
            opt.step()
        except NonFiniteGradientError as error:
            assert f"rank {self.size - 1}" in str(error), error
        else:
            raise AssertionError("no NonFiniteGradientError")
        same_bits(list(model.parameters()), before, "after the refused step")

    def dcp_round_trip(self) -> None:
        """DCP save at step 7, continue to 14; a fresh model and optimizer loaded from the
        checkpoint continue bitwise the same (also with h0="adam": its second_moment)."""
        self.dcp_once({}, Path(self.args.out) / "dcp", self.args.save)
        self.dcp_once({"h0": "adam"}, Path(self.args.out) / "dcp-adam", None)

    def dcp_once(self, options: dict[str, Any], path: Path, save: str | None) -> None:
        model = self.fsdp()
        opt = mt.MLBFGS(model.parameters(), lr=0.1, **HYPER, **options)

        def steps(model: torch.nn.Module, opt: Any, first: int, last: int) -> None:
            for t in range(first, last + 1):
                loss_of(model, t, self.rank).backward()
                opt.step()
                opt.zero_grad()

        steps(model, opt, 1, 7)  # a boundary: pairs stored, snapshot taken
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, opt),
        }
        dcp.save(state, checkpoint_id=str(path))
        if save:
            dcp.save(state, checkpoint_id=save)
        steps(model, opt, 8, 14)
        model2 = self.fsdp(seed=5)
        opt2 = mt.MLBFGS(model2.parameters(), lr=0.1, **HYPER, **options)
        state2 = {
            "model": get_model_state_dict(model2),
            "optim": get_optimizer_state_dict(model2, opt2),
        }
        dcp.load(state2, checkpoint_id=str(path))
        set_model_state_dict(model2, state2["model"])
        set_optimizer_state_dict(model2, opt2, state2["optim"])
        assert opt2.engines[0].step_count == 7
        steps(model2, opt2, 8, 14)
        same_bits(list(model2.parameters()), [p.full_tensor() for p in model.parameters()], "dcp")

    def resume_on_other_ranks_is_refused(self) -> None:
        model = self.fsdp()
        opt = mt.MLBFGS(model.parameters(), lr=0.1, **HYPER)
        state = {"optim": get_optimizer_state_dict(model, opt)}
        dcp.load(state, checkpoint_id=self.args.resume)
        try:
            set_optimizer_state_dict(model, opt, state["optim"])
        except ValueError as error:
            assert "cannot be resharded" in str(error), error
            assert "sharded over 4 rank(s)" in str(error), error
        else:
            raise AssertionError("a state of 4 ranks loaded onto 2")

    def tensor_parallel(self) -> None:
        """ColwiseParallel then RowwiseParallel (its replicated bias in a group of its
        own): bitwise one process whose blocks are the shards."""
        model, twin = mlp(), mlp()
        parallelize_module(model, self.mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        groups = [
            {"params": [model[0].weight, model[0].bias, model[2].weight]},
            {"params": [model[2].bias]},
        ]
        opt = mt.MLBFGS(groups, lr=0.1, **HYPER)
        w0, b0, w2, b2 = twin.parameters()
        rows, cols = torch.chunk(torch.arange(8), self.size), 8 // self.size

        # RowwiseParallel shards w2 on dim 1: a rank's shard (3, cols) is no flat range of
        # w2, so the twin holds w2 as (ranks, 3, cols), whose [r] is rank r's shard in the
        # same element order.
        def by_rank(w: torch.Tensor) -> torch.Tensor:
            return w.detach().reshape(3, self.size, cols).permute(1, 0, 2).contiguous()

        w2r = torch.nn.Parameter(by_rank(w2))
        blocks: list[list[tuple[int, int, int]]] = []
        start = 0
        for r, chunk in enumerate(rows):
            n = len(chunk)
            blocks.append(
                [
                    (0, start * 6, (start + n) * 6),
                    (1, start, start + n),
                    (2, r * 3 * cols, (r + 1) * 3 * cols),
                ]
            )
            start += n
        ref = mt.MLBFGS(
            [{"params": [w0, b0, w2r], "blocks": blocks}, {"params": [b2]}], lr=0.1, **HYPER
        )
        for t in range(1, STEPS + 1):
            x, y = batch(t, 0)  # tensor parallelism: every rank sees the same batch
            torch.nn.functional.mse_loss(model(x), y).backward()
            grads = [p.grad.full_tensor() for p in model.parameters()]
            for q, g in zip(
                [w0, b0, w2r, b2], [grads[0], grads[1], by_rank(grads[2]), grads[3]], strict=True
            ):
                q.grad = g
            opt.step()
            ref.step()
            opt.zero_grad()
            back = w2r.detach().permute(1, 0, 2).reshape(3, 8)
            same_bits(list(model.parameters()), [w0, b0, back, b2], f"tp step {t}")

    def errors_name_the_parameter(self) -> None:
        model = mlp()
        fully_shard(model[0], mesh=self.mesh)  # model[2] stays plain
        try:
            mt.MLBFGS(model.parameters(), lr=0.1)
        except TypeError as error:
            assert "param 2 (shape (3, 8)) is a plain tensor" in str(error), error
        else:
            raise AssertionError("a group mixing DTensors and tensors was accepted")
        from mlbfgs.comm import TorchComm

        try:
            mt.MLBFGS(self.fsdp().parameters(), comm=TorchComm(exit_on_exception=False))
        except ValueError as error:
            assert "without comm=" in str(error), error
        else:
            raise AssertionError("comm= with DTensors was accepted")


CHECKS = [
    "fsdp_trains_and_equals_one_process",
    "step_norm_unit_sums_over_ranks",
    "released_preset",
    "nonfinite_raises_on_every_rank",
    "dcp_round_trip",
    "tensor_parallel",
    "errors_name_the_parameter",
]
"""Every check a launch runs, in order (``tests/torch/test_torch_dtensor.py`` expects them)."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--save")
    parser.add_argument("--resume")
    parser.add_argument("--only", help="run only the checks whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    checks = Checks(args)
    names = list(CHECKS)
    if args.resume:
        names.append("resume_on_other_ranks_is_refused")
    for name in names:
        if args.only is None or args.only in name:
            checks.check(name, getattr(checks, name))
    out = Path(args.out)
    (out / f"rank{checks.rank}.json").write_text(json.dumps(checks.report, indent=1))
    dist.barrier()  # every report is on disk
    # Leave without tearing gloo down: one rank of four once aborted after the barrier
    # ("terminate called without an active exception", a C++ thread destroyed unjoined,
    # in destroy_process_group or in the interpreter's teardown) and failed a clean CI run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
