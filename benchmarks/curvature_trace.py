"""Trace mu, tau and gamma of mL-BFGS while it trains the demo CNN on digits.

Run: ``.venv/bin/python benchmarks/curvature_trace.py [lr] [update_every] [hessian_momentum]
[sigma_low] [step_norm]`` (defaults 0.05 5 0.999 0.01 none: the paper's step, Algorithm 1
as written, with a short T). Prints, every 10 steps, the mini-batch loss, the gradient
norm, the step's length over SGD's (``|theta_{t+1} - theta_t| / (lr_t |g|)``, heavy ball
included) and ``MLBFGS.stats()`` of the block: the curvature ratio ``mu = s^T y / s^T s``
of the newest pair, its damping ``tau`` and ``gamma`` (the scale of ``H_0``). Used in
docs/results.md and docs/algorithm.md to show why the paper's step needs step control.
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
    defaults = ["0.05", "5", "0.999", "0.01", "none"]
    lr, update_every, beta, sigma_low = (float(a) for a in (argv + defaults[len(argv) :])[:4])
    step_norm = (argv + defaults[len(argv) :])[4]
    torch.set_num_threads(1)
    data = load("digits")
    model = seeded_model(data.image_shape, data.classes, 0)
    params = list(model.parameters())
    iterations = 300
    schedule = cosine(lr, iterations)
    opt = mlbfgs.MLBFGS(
        [p.detach() for p in params],
        lr=schedule,
        update_every=int(update_every),
        hessian_momentum=beta,
        sigma_low=sigma_low,
        preset="paper",
        step_norm=step_norm,  # type: ignore[arg-type]
    )
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    print(
        f"lr {lr}, T {int(update_every)}, beta {beta}, sigma_low {sigma_low}, step_norm {step_norm}"
    )
    for t, index in enumerate(batch_order(len(y), 64, iterations, 0), start=1):
        for p in params:
            p.grad = None
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        loss.backward()
        norm = math.sqrt(sum(float(p.grad.square().sum()) for p in params if p.grad is not None))
        before = [p.detach().clone() for p in params]
        opt.step([p.grad for p in params])
        moved = math.sqrt(
            sum(float((p.detach() - b).square().sum()) for p, b in zip(params, before, strict=True))
        )
        stats = opt.stats()[0]
        if t % 10 == 0:
            print(
                f"{t:4d} loss {float(loss.detach()):.4f} |g| {norm:.3f} "
                f"step/SGD {moved / (schedule(t) * norm):.3g} mu {stats['mu']:.4g} "
                f"tau {stats['tau']:.3g} gamma {stats['gamma']:.4g} pairs {stats['pairs_stored']}"
            )
        if not math.isfinite(float(loss.detach())):
            print("diverged")
            break


if __name__ == "__main__":
    main(sys.argv[1:])
