"""A small CNN on scikit-learn's digits (1,797 real 8x8 images) with ``mlbfgs.torch.MLBFGS``.

An ordinary torch training loop: ``zero_grad(set_to_none=True)``, ``backward``,
``clip_grad_norm_``, ``step``, and a ``CosineAnnealingLR`` schedule over the whole run, as
in the paper. Clipping matters here: with batches of 64 the curvature pairs are noisy and
an occasional large ``H g`` step can otherwise throw the small network off. Runs in
seconds on a CPU::

    .venv/bin/python examples/torch_cnn.py --epochs 12
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

import mlbfgs.torch


def digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images scaled to [0, 1] as (N, 1, 8, 8), split 80/20 with a fixed permutation."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),  # 16 x 4 x 4
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),  # 32 x 2 x 2
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=1.0, help="max gradient norm; 0: off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="a model this small is fastest on 1")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = digits(args.seed)
    model = cnn()
    batches = (len(y_train) + args.batch_size - 1) // args.batch_size
    # The library's defaults (the paper's Table 5 plus step control); only the lr is set.
    opt = mlbfgs.torch.MLBFGS(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * batches)
    loss_fn = torch.nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed + 1)

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle)
        total = 0.0
        for i in range(batches):
            index = order[i * args.batch_size : (i + 1) * args.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[index]), y_train[index])
            loss.backward()
            if args.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        if epoch == 1 or epoch == args.epochs or epoch % 4 == 0:
            print(f"epoch {epoch:3d}  train loss {total / len(y_train):.4f}")
    elapsed = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    pairs = sum(block["pairs_stored"] for group in opt.stats() for block in group)
    print(
        f"test accuracy {accuracy:.4f} on {len(y_test)} held-out digits; "
        f"{opt.engines[0].step_count} steps in {elapsed:.1f} s; curvature pairs stored {pairs}"
    )


if __name__ == "__main__":
    main()
