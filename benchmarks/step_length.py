"""How long H g is against g, and what each step control makes of it (issue 17).

Run: ``.venv/bin/python benchmarks/step_length.py``. The race's ``quad-diag-1e2`` (the
noisy diagonal quadratic, seed 0, 1000 steps, the race's cosine schedule from lr 0.0111,
the lr SGD and the paper's step chose there) trained by ``mlbfgs.torch.MLBFGS`` under
each ``step_norm``: the final training loss, and the quantiles of ``|H g| / |g|`` (the
"norm ratio") over the preconditioned steps, before step control. The ratios are read by
wrapping the core's ``block_direction``, which the engine calls once per block and step.
"""

from __future__ import annotations

import numpy as np
import torch

from mlbfgs.core import algorithm
from mlbfgs.experiments.convergence.runs import train
from mlbfgs.experiments.race.workloads import WORKLOADS
from mlbfgs.torch import MLBFGS

STEPS, LR = 1000, 0.01111111111
STEP_NORMS = ("none", "gradient", "trust")


def main() -> None:
    torch.set_num_threads(1)
    ratios: list[float] = []
    plain = algorithm.block_direction

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        direction = plain(*args, **kwargs)
        if direction.preconditioned is not None:
            g, d = direction.first_order, direction.preconditioned
            ratios.append(float(np.linalg.norm(d) / np.linalg.norm(g)))
        return direction

    algorithm.block_direction = recording
    print(f"quad-diag-1e2, seed 0, {STEPS} steps, cosine from lr {LR:.4g}")
    print("| step_norm | final training loss | norm ratio, 10% | 50% | 90% |")
    print("|---|---|---|---|---|")
    for step_norm in STEP_NORMS:
        ratios.clear()
        problem = WORKLOADS["quad-diag-1e2"].build(0, STEPS)
        optimizer = MLBFGS(problem.params, lr=LR, step_norm=step_norm)
        train(problem, optimizer, LR, STEPS, lambda t: False)  # the race's cosine schedule
        low, mid, high = np.quantile(ratios, [0.1, 0.5, 0.9])
        print(f"| {step_norm} | {problem.train_loss():.4f} | {low:.3f} | {mid:.3f} | {high:.3f} |")


if __name__ == "__main__":
    main()
