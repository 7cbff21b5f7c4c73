"""What a half-precision curvature history (``history_dtype``) saves and costs.

    .venv/bin/python benchmarks/history_dtype.py [--part bytes|time|convergence] [--jobs 2]

- bytes: ``MLBFGS.history_bytes()`` per history dtype, on the suite's CNNs and a wide MLP;
- time: a whole ``MLBFGS.step`` (history full, T = 50, torch CPU with one thread, and NumPy)
  per history dtype, timed in interleaved rounds; each round's ratio to the float32
  history, median over rounds, and the step against a torch SGD step;
- convergence: the default optimizer at lr 0.1 on the suite's CNN tasks, seeds 1-5, with
  a float32, bfloat16 and float16 history (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from split_layers import compare

import mlbfgs
from mlbfgs.data import load
from mlbfgs.experiments.convergence import Method
from mlbfgs.experiments.models import seeded_model

HISTORY_DTYPES: dict[str, str | None] = {
    "float32": None,
    "bfloat16": "bfloat16",
    "float16": "float16",
}


def models() -> dict[str, torch.nn.Module]:
    digits, mnist = load("digits"), load("mnist5k")
    torch.manual_seed(0)
    return {
        "cnn-digits": seeded_model(digits.image_shape, digits.classes, 0),
        "cnn-mnist5k": seeded_model(mnist.image_shape, mnist.classes, 0),
        "MLP 784-768-768-10": torch.nn.Sequential(
            torch.nn.Linear(784, 768),
            torch.nn.ReLU(),
            torch.nn.Linear(768, 768),
            torch.nn.ReLU(),
            torch.nn.Linear(768, 10),
        ),
    }


def engine(params: list[Any], history_dtype: str | None) -> mlbfgs.MLBFGS:
    return mlbfgs.MLBFGS(params, lr=1e-6, update_every=50, warmup=2, history_dtype=history_dtype)


def bytes_table() -> None:
    print("history bytes per rank (one process, default blocks, M = 10)")
    print("| model | parameters | float32 | bfloat16 | float16 | float16 / float32 |")
    print("|---|---|---|---|---|---|")
    for name, model in models().items():
        params = [p.detach() for p in model.parameters()]
        sizes = {
            key: engine(params, dtype).history_bytes() for key, dtype in HISTORY_DTYPES.items()
        }
        n = sum(p.numel() for p in params)
        mib = {key: f"{value / 2**20:.2f} MiB" for key, value in sizes.items()}
        ratio = sizes["float16"] / sizes["float32"]
        cells = " | ".join(mib[key] for key in HISTORY_DTYPES)
        print(f"| {name} | {n} | {cells} | {ratio:.4f} |")


def filled(params: list[Any], history_dtype: str | None, grads: list[Any]) -> mlbfgs.MLBFGS:
    opt = engine(params, history_dtype)
    for _ in range(560):  # 10 pairs pushed: the history is full
        opt.step(grads)
    assert len(opt._blocks[0].history) == 10
    return opt


def rounds(
    steps: dict[str, Callable[[], None]], count: int = 9, calls: int = 30
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, in ``count`` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(count):
        for name, step in steps.items():
            step()
            start = time.perf_counter()
            for _ in range(calls):
                step()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return times


def time_table() -> None:
    torch.set_num_threads(1)
    model = models()["MLP 784-768-768-10"]
    base = [p.detach().clone() for p in model.parameters()]
    n = sum(p.numel() for p in base)
    print(f"whole MLBFGS.step, MLP n = {n}, M = 10, T = 50, float32 parameters, 1 thread;")
    print("ratios: medians over 9 interleaved rounds of each round's ratio")
    print("| library | history | median ms / step | x float32 history | x SGD step |")
    print("|---|---|---|---|---|")
    for library in ("torch", "numpy"):
        dtypes = [k for k in HISTORY_DTYPES if library == "torch" or k != "bfloat16"]
        steps: dict[str, Callable[[], None]] = {}
        for key in dtypes:
            params = [p.clone() for p in base]
            grads = [torch.randn_like(p) * 1e-3 for p in params]
            if library == "numpy":
                params, grads = [p.numpy() for p in params], [g.numpy() for g in grads]
            opt = filled(params, HISTORY_DTYPES[key], grads)
            steps[key] = lambda opt=opt, grads=grads: opt.step(grads)
        sgd_params = [p.clone().requires_grad_() for p in base]
        for p in sgd_params:
            p.grad = torch.randn_like(p)
        sgd = torch.optim.SGD(sgd_params, lr=1e-6, momentum=0.9)
        steps["SGD"] = sgd.step
        times = rounds(steps)
        for key in dtypes:
            ratio = statistics.median(
                a / b for a, b in zip(times[key], times["float32"], strict=True)
            )
            to_sgd = statistics.median(a / b for a, b in zip(times[key], times["SGD"], strict=True))
            print(
                f"| {library} | {key} | {statistics.median(times[key]):.2f} | {ratio:.2f} | "
                f"{to_sgd:.2f} |"
            )


def variants(task: str) -> dict[str, Method]:
    return {
        key: Method(key, "mlbfgs", {} if dtype is None else {"history_dtype": dtype})
        for key, dtype in HISTORY_DTYPES.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("bytes", "time", "convergence"), action="append")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    parts = args.part or ["bytes", "time", "convergence"]
    torch.manual_seed(0)
    if "bytes" in parts:
        bytes_table()
    if "time" in parts:
        time_table()
    if "convergence" in parts:
        compare(variants, args.jobs, "history")


if __name__ == "__main__":
    main()
