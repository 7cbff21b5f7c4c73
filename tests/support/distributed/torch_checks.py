"""The distributed checks that need torch: torch tensors through the collectives, and
``mlbfgs.torch.MLBFGS`` with a communicator (run with ``run_checks.py --torch``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from problem import STEPS, gradient, initial_params, run, same_bits

from mlbfgs.comm import Communicator, SingleProcessComm


class TorchChecks:
    """Mixed into ``run_checks.Checks``, which sets these attributes."""

    comm: Communicator
    args: argparse.Namespace
    rank: int
    size: int

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
            opt = mt.MLBFGS(groups, lr=0.05, history_size=3, update_every=2, comm=comm, **extra)
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
                net.parameters(), lr=0.05, history_size=3, update_every=2, comm=self.comm
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
