"""Why ``h0="rms"`` stayed on the autoencoder's plateau, and ``h0="adam"`` leaves it.

Run: ``.venv/bin/python benchmarks/rmsprop_plateau.py``. The race's autoencoder (seed 0,
500 steps, the race's cosine schedule, one torch thread), trained by AdamW at its tuned
lr, by torch's own RMSprop with heavy ball (alpha 0.999, momentum 0.9: the first-order step
of the former ``h0="rms"``), and by ``mlbfgs.torch.MLBFGS(h0="adam")`` at AdamW's lr with
and without its curvature pairs; the training loss every 100 steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mlbfgs.experiments.race.workloads import WORKLOADS
from mlbfgs.experiments.schedule import cosine
from mlbfgs.torch import MLBFGS

STEPS = 500
RUNS: dict[str, tuple[float, Callable[[list[torch.Tensor], float], Any]]] = {
    "AdamW": (0.009, lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.0)),
    "RMSprop + heavy ball": (
        9e-4,
        lambda p, lr: torch.optim.RMSprop(p, lr=lr, alpha=0.999, momentum=0.9),
    ),
    "mL-BFGS adam, no pairs": (
        0.009,
        lambda p, lr: MLBFGS(p, lr=lr, h0="adam", warmup=10**9),
    ),
    "mL-BFGS adam": (0.009, lambda p, lr: MLBFGS(p, lr=lr, h0="adam")),
}


def main() -> None:
    torch.set_num_threads(1)
    print(f"autoencoder, seed 0, {STEPS} steps: training loss at steps 100, 200, ..., {STEPS}")
    for label, (lr, make) in RUNS.items():
        problem = WORKLOADS["autoencoder"].build(0, STEPS)
        optimizer, schedule, losses = make(problem.params, lr), cosine(lr, STEPS), []
        for t in range(1, STEPS + 1):
            for group in optimizer.param_groups:
                group["lr"] = schedule(t)
            for p in problem.params:
                p.grad = None
            problem.batch_loss(t).backward()
            optimizer.step()
            if t % 100 == 0:
                losses.append(f"{problem.train_loss():.1f}")
        print(f"{label:22s} lr {lr:<7g} {' '.join(losses)}")


if __name__ == "__main__":
    main()
