"""What splitting a layer across blocks costs in convergence, on the suite's CNN tasks.

    .venv/bin/python benchmarks/split_layers.py [--jobs 2]

Element-balanced blocks (the default) may cut a tensor in two, so one layer's curvature
is then approximated by two blocks that never see each other's entries. This runs the
default optimizer of the convergence suite (lr 0.1, its tuned lr on both CNN tasks) on
one process with one block (``blocks=1``), with the default blocks (``blocks=None``: 4 on
cnn-digits, 8 on cnn-mnist5k, the same on 1, 2, 4 and 8 ranks), with four blocks of whole
tensors (``blocks=4``) and with four element-balanced blocks (what four ranks used before
the default blocks became a property of the model), on the suite's evaluation seeds 1-5,
and prints the median final training loss, the test accuracy and the divergences.
Deterministic; about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

from mlbfgs.core.pieces import balanced_pieces
from mlbfgs.experiments.convergence import METHODS, TASKS, Method, Protocol
from mlbfgs.experiments.convergence.suite import execute

TASK_NAMES = ("cnn-digits", "cnn-mnist5k")
SEEDS = (1, 2, 3, 4, 5)
LR = 0.1


def variants(task: str) -> dict[str, Method]:
    sizes = [p.numel() for p in TASKS[task].build(0, 1).params]
    four = [[list(piece) for piece in block] for block in balanced_pieces(sizes, 4)]
    return {
        "one block": Method("one block", "mlbfgs", {"blocks": 1}),
        "default blocks": Method("default blocks", "mlbfgs", {}),
        "4 layer blocks": Method("4 layer blocks", "mlbfgs", {"blocks": 4}),
        "4 balanced blocks": Method("4 balanced blocks", "mlbfgs", {"blocks": four}),
    }


def compare(variants: Callable[[str], dict[str, Method]], jobs: int, column: str) -> None:
    """Run each task's ``variants`` on the evaluation seeds and print the medians."""
    keys, labels = [], []
    for task in TASK_NAMES:
        for name, method in variants(task).items():
            label = f"{task}: {name}"
            METHODS[label] = Method(label, method.kind, method.options)  # for the workers
            labels.append((task, name, label))
            keys += [Protocol().key(task, label, LR, seed) for seed in SEEDS]
    results = execute(keys, jobs, lambda _: None)
    by_label: dict[str, list] = {}
    for result in results:
        by_label.setdefault(result.key.method, []).append(result)
    print(f"default optimizer, lr {LR}, seeds {list(SEEDS)}, the suite's budget; medians")
    print(
        f"{'task':<12} {column:<18} {'final train loss':>17} {'test accuracy':>14} {'diverged':>9}"
    )
    for task, name, label in labels:
        runs = by_label[label]
        finals = [math.inf if r.diverged else r.final_loss for r in runs]
        accuracy = statistics.median(r.test_accuracy for r in runs)
        diverged = sum(r.diverged for r in runs)
        print(
            f"{task:<12} {name:<18} {statistics.median(finals):>17.4g} {accuracy:>14.4f} "
            f"{diverged:>6}/{len(runs)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    compare(variants, parser.parse_args().jobs, "blocks")


if __name__ == "__main__":
    main()
