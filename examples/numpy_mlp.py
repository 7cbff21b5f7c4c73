"""mL-BFGS against SGD with momentum on a NumPy MLP: no torch anywhere.

Trains the same two-layer perceptron (``mlbfgs.experiments.numpy_mlp``: NumPy forward and
backward by hand) on scikit-learn's bundled digits (1,797 real 8x8 images) with each
optimizer, the same mini-batches and the same cosine learning-rate
schedule, and prints a table. Runs in seconds on a CPU:

    .venv/bin/python examples/numpy_mlp.py [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import mlbfgs
from mlbfgs.experiments.numpy_mlp import NumpyMLP
from mlbfgs.experiments.schedule import cosine


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return tuple(train_test_split(x, digits.target, test_size=0.25, random_state=seed))


class SGDMomentum:
    """Plain SGD with heavy-ball momentum, the same convention as mL-BFGS's warm-up."""

    def __init__(self, params: list[np.ndarray], lr: Callable[[int], float], momentum: float):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buffers: list[np.ndarray] | None = None
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        if self.buffers is None:
            self.buffers = [g.copy() for g in grads]
        else:
            for b, g in zip(self.buffers, grads, strict=True):
                b *= self.momentum
                b += g
        for p, b in zip(self.params, self.buffers, strict=True):
            p -= self.lr(self.t) * b


def train(name: str, make_optimizer, data, epochs: int, batch: int, seed: int) -> dict:
    x_train, x_test, y_train, y_test = data
    model = NumpyMLP(inputs=64, hidden=64, classes=10, seed=seed)
    steps_per_epoch = len(x_train) // batch
    optimizer = make_optimizer(model.params, epochs * steps_per_epoch)
    order_rng = np.random.default_rng(seed)
    curve, step_time = [], 0.0
    for _ in range(epochs):
        order = order_rng.permutation(len(x_train))
        for k in range(steps_per_epoch):
            index = order[k * batch : (k + 1) * batch]
            loss, grads = model.loss_and_grads(x_train[index], y_train[index])
            start = time.perf_counter()
            optimizer.step(grads)
            step_time += time.perf_counter() - start
            curve.append(loss)
    return {
        "name": name,
        "curve": np.array(curve),
        "train_loss": model.loss(x_train, y_train),
        "test_accuracy": model.accuracy(x_test, y_test),
        "step_ms": 1e3 * step_time / len(curve),
    }


def steps_to(curve: np.ndarray, target: float, window: int = 20) -> int | None:
    """First step at which the running mean of the mini-batch loss is below target."""
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    below = np.nonzero(smooth < target)[0]
    return int(below[0]) + window if len(below) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.05, help="training-loss target")
    args = parser.parse_args()
    data = load_data(args.seed)

    def sgd(lr: float):
        return lambda p, total: SGDMomentum(p, cosine(lr, total), momentum=0.9)

    def mlbfgs_run(lr: float):
        # The library's defaults (the paper's Table 5 plus step control); only the lr.
        return lambda p, total: mlbfgs.MLBFGS(p, lr=cosine(lr, total))

    runs = [
        train(name, make, data, args.epochs, args.batch, args.seed)
        for name, make in [
            ("SGD lr 0.1", sgd(0.1)),  # the paper's SGD setting (Table 5)
            ("SGD lr 0.3", sgd(0.3)),
            ("mL-BFGS lr 0.1", mlbfgs_run(0.1)),  # the default step has SGD's length
            ("mL-BFGS lr 0.3", mlbfgs_run(0.3)),
        ]
    ]
    print(f"digits MLP 64-64-10, {args.epochs} epochs, batch {args.batch}, cosine lr")
    header = f"{'optimizer':<16}{'steps to loss<' + str(args.target):>20}"
    print(header + f"{'final train loss':>18}{'test accuracy':>15}{'step ms':>9}")
    for run in runs:
        reached = steps_to(run["curve"], args.target)
        print(
            f"{run['name']:<16}{reached if reached is not None else 'not reached':>20}"
            f"{run['train_loss']:>18.4f}{run['test_accuracy']:>15.3f}{run['step_ms']:>9.3f}"
        )


if __name__ == "__main__":
    main()
