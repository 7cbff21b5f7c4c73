"""Where one mL-BFGS step's time goes on the demo CNN (torch, CPU), piece by piece.

Run: ``.venv/bin/python benchmarks/step_breakdown.py``. Times each piece of ``MLBFGS.step`` in
isolation (best of several thousand calls) next to a whole step and a torch SGD step,
after the history is full, with the paper's T = 50 so the per-pair work is negligible.
One block (``blocks=1``), so that the pieces add up to the step; the default blocks (4 on
this network) add each piece's fixed overhead once per block.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import mlbfgs
from mlbfgs.core import precondition
from mlbfgs.data import load
from mlbfgs.engine.nonfinite import certify
from mlbfgs.engine.validation import check_grads
from mlbfgs.experiments.models import seeded_model


def micros(fn: Callable[[], object], calls: int = 2000) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    torch.set_num_threads(1)
    data = load("digits")
    model = seeded_model(data.image_shape, data.classes, 0)
    params = [p.detach() for p in model.parameters()]
    grads = [torch.randn_like(p) for p in params]
    opt = mlbfgs.MLBFGS(params, lr=1e-6, blocks=1, update_every=50, history_size=10, warmup=2)
    for _ in range(600):
        opt.step(grads)
    xp, layout, kernels, block = opt._xp, opt.layouts[0], opt._kernels, opt._blocks[0]
    assert block.averages is not None and block.form is not None
    averages, form = block.averages, block.form
    theta, g = layout.gather(xp, params), layout.gather(xp, grads)
    projection = kernels.project(block.history.pairs, g)
    buffer = g.clone()
    sgd = torch.optim.SGD(list(model.parameters()), lr=1e-6, momentum=0.9)
    for p, grad in zip(model.parameters(), grads, strict=True):
        p.grad = grad
    pieces: dict[str, Callable[[], object]] = {
        "whole MLBFGS.step": lambda: opt.step(grads),
        "check_grads (validation)": lambda: check_grads(grads, params, xp),
        "gather theta and g (concat)": lambda: (
            layout.gather(xp, params),
            layout.gather(xp, grads),
        ),
        "project: pairs @ g (mv)": lambda: kernels.project(block.history.pairs, g),
        "precondition: middle, addmv": lambda: precondition(
            block.history, form, g, projection, kernels
        ),
        "finite check of the probe": lambda: certify(xp, kernels, [[projection]]),
        "Eq (5) averages (lerp)": lambda: averages.update(theta, g, 0.99, kernels),
        "heavy ball": lambda: kernels.heavy_ball_(buffer, g, 0.9),
        "descend": lambda: kernels.descend(theta, g, 1e-6),
        "scatter into params": lambda: layout.scatter(xp, theta, params),
        "torch SGD step (momentum)": sgd.step,
    }
    n = sum(p.numel() for p in params)
    print(f"demo CNN, n = {n}, M = 10, float32, torch {torch.__version__}, 1 thread")
    times = {name: micros(fn, 1000 if "step" in name else 2000) for name, fn in pieces.items()}
    whole, sgd_step = times["whole MLBFGS.step"], times["torch SGD step (momentum)"]
    print("| piece | microseconds | fraction of the mL-BFGS step | x SGD step |")
    print("|---|---|---|---|")
    for name, us in times.items():
        print(f"| {name} | {us:.0f} | {us / whole:.2f} | {us / sgd_step:.2f} |")


if __name__ == "__main__":
    main()
