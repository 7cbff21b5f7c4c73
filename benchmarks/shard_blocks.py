"""What FSDP2's blocks cost in convergence against the replicated path's, on the suite's CNNs.

    .venv/bin/python benchmarks/shard_blocks.py [--jobs 2]

With DTensor parameters (``fully_shard``) each rank's curvature block is its own shards:
every parameter's rows ``torch.chunk``-ed over the ranks (docs/distributed.md). The
replicated path (``comm=TorchComm()``) uses element-balanced blocks of the flattened
model instead. This runs both partitions for four ranks on one process (the same
mathematics, as the gloo tests check bitwise) with the default optimizer at the suite's
lr, seeds 1-5, as ``benchmarks/split_layers.py`` does. Deterministic; about 3 minutes.
"""

from __future__ import annotations

import argparse

from split_layers import compare

from mlbfgs.core.pieces import balanced_pieces
from mlbfgs.experiments.convergence import TASKS, Method

RANKS = 4


def shard_pieces(shapes: list[tuple[int, ...]], ranks: int) -> list[list[list[int]]]:
    """Each rank's dim-0 shards of every parameter (FSDP2's split) as element ranges."""
    blocks: list[list[list[int]]] = [[] for _ in range(ranks)]
    for i, shape in enumerate(shapes):
        row = 1
        for d in shape[1:]:
            row *= d
        rows, start = shape[0], 0
        for r in range(ranks):
            n = min(max(rows - r * -(-rows // ranks), 0), -(-rows // ranks))  # torch.chunk
            if n:
                blocks[r].append([i, start, start + n * row])
                start += n * row
    return [block for block in blocks if block]


def variants(task: str) -> dict[str, Method]:
    params = TASKS[task].build(0, 1).params
    sizes = [p.numel() for p in params]
    balanced = [[list(piece) for piece in block] for block in balanced_pieces(sizes, RANKS)]
    shards = shard_pieces([tuple(p.shape) for p in params], RANKS)
    return {
        "replicated (4)": Method("replicated (4)", "mlbfgs", {"blocks": balanced}),
        "FSDP2 shards (4)": Method("FSDP2 shards (4)", "mlbfgs", {"blocks": shards}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    compare(variants, parser.parse_args().jobs, "blocks")


if __name__ == "__main__":
    main()
