"""What bfloat16 parameters cost in convergence, for mL-BFGS and for AdamW side by side.

    .venv/bin/python benchmarks/half_precision.py [--steps 400] [--seeds 0 1 2 3 4]

A digits MLP (64-32-10, ReLU; scikit-learn's 1,797 digits as ``mlbfgs.data`` packs them)
trains for ``--steps`` mini-batch steps of 64 images in float32 and again after
``model.to(torch.bfloat16)``, from the same initial weights (rounded) on the same
batches; the loss is evaluated on the whole training set at the end (cross-entropy of
the logits taken to float32). The table gives the mean final loss over the seeds, the
bfloat16 / float32 ratio and, for mL-BFGS, the largest ``stats()["average_stalled"]`` of
the bfloat16 runs: the share of the parameter average of Eq (5) that did not move over
the last T steps.

Each optimizer runs at an lr that brings float32 to a loss of about 0.02-0.03 in 400
steps (the level issue 19 measured at), and at its default (mL-BFGS 0.1, AdamW 1e-3),
where the two end far apart: near a loss of 1e-3 the ratio measures how finely bfloat16
weights can move at all (every optimizer rounds its update to the weights' 8 bits), not
the optimizer. Before mlbfgs kept the state of half-precision parameters in float32
(docs/backends.md), mL-BFGS lost 1.65x at lr 0.02 and 4.03x at lr 0.1 here.
Deterministic on one machine; about 1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import torch
from torch import nn

import mlbfgs.torch
from mlbfgs.data import load

BATCH = 64
HIDDEN = 32
RUNS: list[tuple[str, float, Callable[[nn.Module, float], torch.optim.Optimizer]]] = [
    # At a matched loss: lr that brings float32 to about 0.02-0.03 in 400 steps.
    ("mL-BFGS", 0.02, lambda model, lr: mlbfgs.torch.MLBFGS(model.parameters(), lr=lr)),
    ("AdamW", 0.005, lambda model, lr: torch.optim.AdamW(model.parameters(), lr=lr)),
    # At the defaults (mL-BFGS's lr 0.1, torch's AdamW lr 1e-3): far apart in loss.
    ("mL-BFGS", 0.1, lambda model, lr: mlbfgs.torch.MLBFGS(model.parameters(), lr=lr)),
    ("AdamW", 0.001, lambda model, lr: torch.optim.AdamW(model.parameters(), lr=lr)),
]


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def train(
    run: int, dtype: torch.dtype, seed: int, steps: int, data: tuple[torch.Tensor, torch.Tensor]
) -> tuple[float, float]:
    """The final training loss of ``RUNS[run]`` and (mL-BFGS) the largest stalled share of
    the parameter average at the end."""
    x, y = data
    model = mlp(seed).to(dtype)
    _, lr, build = RUNS[run]
    opt = build(model, lr)
    order = torch.Generator().manual_seed(seed)
    batches: list[torch.Tensor] = []
    for _ in range(steps):
        if not batches:
            batches = list(torch.randperm(len(y), generator=order).split(BATCH))[:-1]
        batch = batches.pop(0)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[batch].to(dtype)).float(), y[batch])
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(nn.functional.cross_entropy(model(x.to(dtype)).float(), y))
    stalled = float("nan")
    if isinstance(opt, mlbfgs.torch.MLBFGS):
        stalled = max(block.get("average_stalled", float("nan")) for block in opt.stats()[0])
    return final, stalled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    digits = load("digits")
    data = (
        torch.from_numpy(digits.x_train.reshape(len(digits.y_train), -1)),
        torch.from_numpy(digits.y_train),
    )
    print(
        f"digits MLP 64-{HIDDEN}-10, {args.steps} steps of {BATCH}, seeds {args.seeds}: "
        "mean final training loss"
    )
    print("| optimizer | lr | float32 | bfloat16 | bfloat16 / float32 | average stalled |")
    print("|---|---|---|---|---|---|")
    for run, (name, lr, _) in enumerate(RUNS):
        means, stalled = {}, math.nan
        for dtype in (torch.float32, torch.bfloat16):
            results = [train(run, dtype, seed, args.steps, data) for seed in args.seeds]
            means[dtype] = statistics.mean(loss for loss, _ in results)
            stalled = max(share for _, share in results)  # bfloat16's, the last
        ratio = means[torch.bfloat16] / means[torch.float32]
        shown = "" if math.isnan(stalled) else f"{stalled:.1%}"
        print(
            f"| {name} | {lr:g} | {means[torch.float32]:.4f} | {means[torch.bfloat16]:.4f} | "
            f"{ratio:.2f}x | {shown} |"
        )


if __name__ == "__main__":
    main()
