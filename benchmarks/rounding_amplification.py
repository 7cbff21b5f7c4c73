"""How much a K-step trajectory amplifies rounding, as a function of beta (Eq (5)).

Runs the backend suite's trajectory problem on torch-cpu and NumPy in float32 for fixed
shapes and hyperparameters over 40 seeds, and prints the worst difference relative to the
largest |theta| on the path, in units of float32 eps. ``docs/backends.md`` derives the
float32 trajectory tolerance from it. Run from the repository root.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from backend_cases import FACTORIES  # noqa: E402
from test_backends import run  # noqa: E402


def main() -> None:
    torch_cpu, numpy = FACTORIES["torch-cpu"](), FACTORIES["numpy"]()
    eps = float(np.finfo(np.float32).eps)
    for beta, damping in itertools.product([0.0, 0.9, 0.999], [True, False]):
        worst = 0.0
        for seed in range(40):
            hyper = {
                "lr": 0.05,
                "history_size": 3,
                "update_every": 2,
                "hessian_momentum": beta,
                "damping": damping,
                "momentum": 0.9,
                "weight_decay": 0.0,
                "warmup": None,
                "blocks": None,
            }
            problem = {
                "shapes": [(3, 4), (8,)],
                "hyper": hyper,
                "steps": 14,
                "noise": 0.1,
                "seed": seed,
                "dtype": np.float32,
            }
            got, _, _ = run(torch_cpu, problem)
            ref, _, peak = run(numpy, problem)
            pairs = zip(got, ref, strict=True)
            error = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in pairs)
            worst = max(worst, error / peak)
        print(f"beta={beta} damping={damping}: worst error / peak |theta| = {worst / eps:.0f} eps")


if __name__ == "__main__":
    main()
