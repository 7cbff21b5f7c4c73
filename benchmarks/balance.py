"""How evenly the default blocks spread the curvature history over ranks (computed).

    .venv/bin/python benchmarks/balance.py [--plan]

A rank's history memory (2 M n values) and its share of the step's work follow the
elements of the blocks it owns. For each model and world size p this prints the largest
rank's elements over the mean (total / p), for blocks of whole tensors ("layers": the
first default, min(p, tensors) blocks balanced by size), for one element-balanced block
per rank (the default until blocks became a property of the model) and for the default
now (``blocks=None``: ``mlbfgs.core.pieces.default_block_count`` element-balanced blocks,
the same number as on one process unless p ranks cannot hold them within 5% of the even
share), with its number of blocks and whether that is one process's. The models are the example of
examples/train_distributed.py and the parameter shapes of ResNet-18 and ResNet-50
(ImageNet, 1000 classes; batch-norm weights and biases are parameters, running statistics
are not), written down from the architectures. Nothing is run or timed.

``--overhead`` times instead what a block costs: a preconditioned one-process step of the
distributed example's MLP with 1, 8, 64 and 128 element-balanced blocks, NumPy and torch
(CPU, one thread), in interleaved rounds, as the median ratio to one block (why the
default stops at 8 blocks for such a model).

``--plan`` prints instead, for a model of 1e9 float32 parameters and M = 10, the bytes
each rank sends per step (one reduce-scatter and one all-gather, ring algorithms: what
``benchmarks/distributed.py`` counts and finds equal to one all-reduce) and the memory
each rank holds (the history also with ``history_dtype="bfloat16"``), for p up to 1024.
"""

from __future__ import annotations

import math
import sys

from mlbfgs.core.partition import balanced_partition
from mlbfgs.core.pieces import balanced_pieces, resolve_blocks
from mlbfgs.engine.assignment import assign_blocks, rank_counts

Shape = tuple[int, ...]


def mlp(widths: list[int]) -> list[Shape]:
    shapes: list[Shape] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return shapes


def _conv_bn(out: int, into: int, k: int) -> list[Shape]:
    return [(out, into, k, k), (out,), (out,)]


def resnet(blocks: list[int], bottleneck: bool) -> list[Shape]:
    """torchvision's ResNet layout: conv1, bn1, four stages, fc."""
    shapes = _conv_bn(64, 3, 7)
    into = 64
    for stage, count in enumerate(blocks):
        width = 64 * 2**stage
        out = 4 * width if bottleneck else width
        for b in range(count):
            if bottleneck:
                shapes += _conv_bn(width, into, 1) + _conv_bn(width, width, 3)
                shapes += _conv_bn(out, width, 1)
            else:
                shapes += _conv_bn(width, into, 3) + _conv_bn(width, width, 3)
            if b == 0 and (stage > 0 or bottleneck):  # the downsampling shortcut
                shapes += _conv_bn(out, into, 1)
            into = out
    return [*shapes, (1000, into), (1000,)]


MODELS = {
    "train_distributed.py MLP": (mlp([64, 256, 256, 10]), 85_002, [1, 2, 3, 4, 5, 6, 7, 8]),
    "ResNet-18": (resnet([2, 2, 2, 2], False), 11_689_512, [1, 2, 4, 8, 64, 1024]),
    "ResNet-50": (resnet([3, 4, 6, 3], True), 25_557_032, [1, 2, 4, 8, 64, 1024]),
}


def imbalance(rank_elements: list[int]) -> float:
    """The largest rank's elements over the mean of all ranks (empty ones included)."""
    return max(rank_elements) / (sum(rank_elements) / len(rank_elements))


def layer_blocks(sizes: list[int], ranks: int) -> list[int]:
    partition = balanced_partition(sizes, min(ranks, len(sizes)))
    block_sizes = [sum(sizes[i] for i in block) for block in partition]
    return rank_counts(block_sizes, assign_blocks(block_sizes, ranks))


def balanced_blocks(sizes: list[int], ranks: int) -> list[int]:
    return [
        sum(stop - start for _, start, stop in block) for block in balanced_pieces(sizes, ranks)
    ]


def default_blocks(sizes: list[int], ranks: int) -> tuple[list[int], int]:
    """Elements per rank of the default blocks on ``ranks`` ranks, and how many blocks."""
    blocks = [sum(stop - start for _, start, stop in b) for b in resolve_blocks(None, sizes, ranks)]
    return rank_counts(blocks, assign_blocks(blocks, ranks)), len(blocks)


def plan(d: int = 10**9, history: int = 10, itemsize: int = 4) -> None:
    """Traffic and memory per rank for a d-parameter model (balanced blocks, one a rank)."""
    gb = 1e9
    print(f"{d:.0e} float32 parameters, M = {history}, one balanced block per rank")
    print(
        f"{'p':>5} {'sent/step GB (= one all-reduce)':>32} {'history GB':>11} "
        f"{'(bfloat16)':>11} {'block vectors GB':>17} {'replicated GB':>14}"
    )
    grams = 2 * history**2 * 8
    for p in (1, 8, 64, 256, 1024):
        share = d / p
        sent = 2 * (p - 1) / p * d * itemsize  # reduce-scatter + all-gather
        history_bytes = 2 * history * share * itemsize + grams
        half_bytes = 2 * history * share * 2 + grams + 2 * history * 8  # + the rows' scales
        vectors = 5 * share * itemsize  # two averages, two snapshots, heavy ball
        replicated = (3 if p > 1 else 2) * d * itemsize  # parameters, gradients, flat buffer
        print(
            f"{p:>5} {sent / gb:>32.2f} {history_bytes / gb:>11.3f} {half_bytes / gb:>11.3f} "
            f"{vectors / gb:>17.3f} {replicated / gb:>14.1f}"
        )


def overhead(counts: tuple[int, ...] = (1, 8, 64, 128), rounds: int = 7) -> None:
    """Step time with ``counts`` blocks over one block's, per array library."""
    import statistics
    import time

    import numpy as np
    import torch

    import mlbfgs

    torch.set_num_threads(1)
    shapes, _, _ = MODELS["train_distributed.py MLP"]
    sizes = [math.prod(shape) for shape in shapes]
    print("one-process step with k blocks / with one block (median of rounds)")
    print(f"{'library':<8} " + " ".join(f"{f'k = {k}':>8}" for k in counts))
    for library in ("numpy", "torch"):
        steppers = {}
        for k in counts:
            rng = np.random.default_rng(0)
            params = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
            if library == "torch":
                params = [torch.from_numpy(p) for p in params]
            blocks = [[list(piece) for piece in block] for block in balanced_pieces(sizes, k)]
            opt = mlbfgs.MLBFGS(params, lr=1e-4, blocks=blocks, update_every=5, warmup=2)
            grads = [0.01 * p for p in params]
            for _ in range(60):  # the history fills: every step is preconditioned
                opt.step(grads)
            steppers[k] = (opt, grads)
        times: dict[int, list[float]] = {k: [] for k in counts}
        for _ in range(rounds):
            for k, (opt, grads) in steppers.items():
                start = time.perf_counter()
                for _ in range(10):
                    opt.step(grads)
                times[k].append(time.perf_counter() - start)
        ratios = [
            statistics.median(a / b for a, b in zip(times[k], times[1], strict=True))
            for k in counts
        ]
        print(f"{library:<8} " + " ".join(f"{r:>7.1f}x" for r in ratios))


def main() -> None:
    if sys.argv[1:] == ["--plan"]:
        plan()
        return
    if sys.argv[1:] == ["--overhead"]:
        overhead()
        return
    print("largest rank's history / mean (the same ratio for memory and for the step's work)")
    print(
        f"{'model':<26} {'tensors':>7} {'parameters':>11} {'p':>5} {'layer blocks':>13} "
        f"{'one a rank':>11} {'default':>8} {'blocks':>7} {'as 1 process':>13}"
    )
    for name, (shapes, expected, world_sizes) in MODELS.items():
        sizes = [math.prod(shape) for shape in shapes]
        assert sum(sizes) == expected, (name, sum(sizes))  # the shapes are the real ones
        _, alone = default_blocks(sizes, 1)
        for p in world_sizes:
            layers, balanced = layer_blocks(sizes, p), balanced_blocks(sizes, p)
            default, count = default_blocks(sizes, p)
            print(
                f"{name:<26} {len(sizes):>7} {sum(sizes):>11,} {p:>5} "
                f"{imbalance(layers):>13.3f} {imbalance(balanced):>11.3f} "
                f"{imbalance(default):>8.3f} {count:>7} {'yes' if count == alone else 'no':>13}"
            )


if __name__ == "__main__":
    main()
