"""Trace mu, tau and gamma of mL-BFGS while it trains the demo CNN on digits.

Run: ``.venv/bin/python benchmarks/curvature_trace.py [lr] [update_every] [hessian_momentum]
[sigma_low]`` (defaults 0.05 5 0.999 0.01: the paper's damping with a short T). Prints,
every 10 steps, the mini-batch loss, the gradient norm and ``MLBFGS.stats()`` of the block:
the curvature ratio ``mu = s^T y / s^T s`` of the newest pair, its damping ``tau`` and
``gamma`` (the scale of ``H_0``). Used in docs/results.md to explain the demo.
"""

from __future__ import annotations

import math
import sys

import torch

import mlbfgs
from mlbfgs.data import load
from mlbfgs.experiments.models import seeded_model
from mlbfgs.experiments.schedule import batch_order, cosine


def main(argv: list[str]) -> None:
    lr, update_every, beta, sigma_low = (
        float(a) for a in (argv + ["0.05", "5", "0.999", "0.01"][len(argv) :])
    )
    torch.set_num_threads(1)
    data = load("digits")
    model = seeded_model(data.image_shape, data.classes, 0)
    params = list(model.parameters())
    iterations = 300
    opt = mlbfgs.MLBFGS(
        [p.detach() for p in params],
        lr=cosine(lr, iterations),
        update_every=int(update_every),
        hessian_momentum=beta,
        sigma_low=sigma_low,
    )
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    print(f"lr {lr}, T {int(update_every)}, beta {beta}, sigma_low {sigma_low}")
    for t, index in enumerate(batch_order(len(y), 64, iterations, 0), start=1):
        for p in params:
            p.grad = None
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        loss.backward()
        norm = math.sqrt(sum(float(p.grad.square().sum()) for p in params if p.grad is not None))
        opt.step([p.grad for p in params])
        stats = opt.stats()[0]
        if t % 10 == 0:
            print(
                f"{t:4d} loss {float(loss.detach()):.4f} |g| {norm:.3f} mu {stats['mu']:.4g} "
                f"tau {stats['tau']:.3g} gamma {stats['gamma']:.4g} pairs {stats['pairs_stored']}"
            )
        if not math.isfinite(float(loss.detach())):
            print("diverged")
            break


if __name__ == "__main__":
    main(sys.argv[1:])
