"""FSDP2 training with mL-BFGS: each rank's curvature block is its own shards.

    ./scripts/torchrun -n 2 examples/train_fsdp2.py    # gloo on CPUs
    ./scripts/torchrun -n 8 examples/train_fsdp2.py    # NCCL, one GPU a rank

``fully_shard`` turns every parameter into a DTensor of which each rank holds a slice of
rows; ``mlbfgs.torch.MLBFGS`` runs its step on those local slices (one curvature block
per rank), so the optimizer sends nothing beyond what FSDP already does: it
all-gathers parameters for the forward and backward passes and reduce-scatters (and
averages) the gradients. Every rank takes its slice of each global mini-batch of
scikit-learn's 1,797 8x8 digits; rank 0 prints the loss and test accuracy per epoch,
then every rank's share of the model, its curvature-history memory and the time per step.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

import mlbfgs.torch


def load(seed: int) -> tuple[np.ndarray, ...]:
    """The digits, scaled to [0, 1]; the same split on every rank."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data / 16.0)[order].astype(np.float32)
    y = digits.target[order].astype(np.int64)
    cut = len(x) * 4 // 5
    return x[:cut], y[:cut], x[cut:], y[cut:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128, help="global mini-batch size")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    rank, size = dist.get_rank(), dist.get_world_size()
    x_train, y_train, x_test, y_test = load(args.seed)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = torch.nn.Sequential(
        torch.nn.Linear(64, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, 10),
    ).to(device)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = mlbfgs.torch.MLBFGS(model.parameters(), lr=args.lr)  # blocks: this rank's shards
    steps_per_epoch = len(x_train) // args.batch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * steps_per_epoch)
    x_test_t, y_test_t = torch.from_numpy(x_test).to(device), torch.from_numpy(y_test).to(device)

    per_rank, steps, busy = args.batch // size, 0, 0.0
    for epoch in range(1, args.epochs + 1):
        order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
        losses = []
        for start in range(0, len(order) - args.batch + 1, args.batch):
            mine = order[start + rank * per_rank : start + (rank + 1) * per_rank]
            x = torch.from_numpy(x_train[mine]).to(device)
            y = torch.from_numpy(y_train[mine]).to(device)
            began = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()  # FSDP reduce-scatters and averages the gradients
            opt.step()
            opt.zero_grad()
            schedule.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            busy += time.perf_counter() - began
            steps += 1
            losses.append(float(loss.detach()))
        with torch.no_grad():
            accuracy = float((model(x_test_t).argmax(1) == y_test_t).float().mean())
        everyone: list[Any] = [None] * size
        dist.all_gather_object(everyone, float(np.mean(losses)))
        if rank == 0:
            train_loss = np.mean(everyone)
            print(f"epoch {epoch:2d}  train loss {train_loss:.4f}  test accuracy {accuracy:.4f}")

    engine = opt.engines[0]
    local = sum(p.to_local().numel() for p in model.parameters())  # type: ignore[operator]
    report = {"elements": local, "history": engine.history_bytes(), "ms": 1000 * busy / steps}
    reports: list[Any] = [None] * size
    dist.all_gather_object(reports, report)
    if rank == 0:
        total = sum(p.numel() for p in model.parameters())
        print(f"{size} rank(s) on {device.type}, {total} parameters, FSDP2, one block per rank")
        print("rank  shard elements  history KiB  ms/step (forward+backward+step)")
        for r, row in enumerate(reports):
            print(f"{r:4d}  {row['elements']:14d}  {row['history'] / 1024:11.1f}  {row['ms']:7.2f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
