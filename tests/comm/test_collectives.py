"""Collectives per step, counted on p ranks simulated by threads (``thread_world.py``), and
per-rank checkpoints that do not belong together.

docs/distributed.md promises, per step: one reduce-scatter of the gradient (only with
``average_grads``), one all-gather of the parameters, and one all-gather of a flag per rank
only under ``on_nonfinite="raise"``; never one per block or per tensor.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic
from thread_world import ThreadComm, run_world

import mlbfgs
from mlbfgs.checkpoint import load_sharded, save_sharded

SHAPES = [(3, 4), (5,), (2, 2, 2), (), (6,)]
STEPS = 14
CONFIG: dict[str, Any] = {"lr": 0.05, "update_every": 2, "history_size": 2}


def poisoned_gradient(problem: NoisyQuadratic, t: int, params: list[np.ndarray]) -> list[Any]:
    grads = problem.gradient(t, params)
    if t == 9:  # a skipped step (non-finite gradient in the last block) under "skip"
        grads[-1][0] = np.nan
    return grads


def counted_run(
    comm: ThreadComm, blocks: Any, **options: Any
) -> tuple[list[Counter[str]], list[np.ndarray], list[list[int]]]:
    """Per-step collective counts, the final parameters and the partition."""
    problem = NoisyQuadratic(SHAPES, seed=8, noise=0.1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, comm=comm, blocks=blocks, **CONFIG, **options)
    per_step = []
    for t in range(1, STEPS + 1):
        before = Counter(comm.calls)
        grads = problem.gradient(t, params)
        opt.step(
            grads
            if options.get("on_nonfinite") == "raise"
            else poisoned_gradient(problem, t, params)
        )
        per_step.append(comm.calls - before)
    return per_step, params, [list(layout.pieces) for layout in opt.layouts]


@pytest.mark.parametrize(
    ("size", "blocks", "options", "expected"),
    [
        (2, None, {}, {"reduce_scatter": 1, "allgatherv": 1}),
        (3, 5, {}, {"reduce_scatter": 1, "allgatherv": 1}),  # several blocks per rank
        (2, 5, {"average_grads": False}, {"allgatherv": 1}),
        (
            2,
            [[4, 0], [1, 2], [3]],
            {"on_nonfinite": "raise"},
            {"reduce_scatter": 1, "allgatherv": 1, "allgather_object": 1},
        ),
    ],
)
def test_one_reduce_scatter_and_one_all_gather_per_step(
    size: int, blocks: Any, options: dict[str, Any], expected: dict[str, int]
) -> None:
    results = run_world(size, lambda comm: counted_run(comm, blocks, **options))
    for rank, (per_step, _, _) in enumerate(results):
        for t, calls in enumerate(per_step, start=1):
            assert calls == Counter(expected), (rank, t, calls)
    # ... and the p ranks computed what one process computes with the same partition
    # (identical gradients on every rank: the mean of p equal values, p a power of two, or
    # no averaging, is exact).
    per_rank_params = [params for _, params, _ in results]
    partition = results[0][2]
    if size == 2 or options.get("average_grads") is False:
        problem = NoisyQuadratic(SHAPES, seed=8, noise=0.1)
        params = problem.initial()
        single = {k: v for k, v in options.items() if k != "average_grads"}
        opt = mlbfgs.MLBFGS(params, blocks=partition, **CONFIG, **single)
        for t in range(1, STEPS + 1):
            grads = problem.gradient(t, params)
            opt.step(
                grads
                if options.get("on_nonfinite") == "raise"
                else poisoned_gradient(problem, t, params)
            )
        for ranks_params in per_rank_params:
            for got, want in zip(ranks_params, params, strict=True):
                np.testing.assert_array_equal(got, want)
        assert sum(s["pairs_pushed"] for s in opt.stats()) > 0


def test_construction_makes_one_small_all_gather() -> None:
    def build(comm: ThreadComm) -> Counter[str]:
        mlbfgs.MLBFGS(NoisyQuadratic(SHAPES).initial(), comm=comm, blocks=3)
        return comm.calls

    assert run_world(2, build) == [Counter({"allgather_object": 1})] * 2


def _save_two_checkpoints(first: Path, second: Path) -> None:
    """On 2 ranks: save after 3 steps into ``first``, after 5 into ``second``."""

    def body(comm: ThreadComm) -> None:
        problem = NoisyQuadratic(SHAPES, seed=9, noise=0.1)
        params = problem.initial()
        opt = mlbfgs.MLBFGS(params, comm=comm, **CONFIG)
        for t in range(1, 6):
            opt.step(problem.gradient(t, params))
            if t == 3:
                save_sharded(opt, first)
        save_sharded(opt, second)

    run_world(2, body)


def test_per_rank_files_from_different_steps_are_refused(tmp_path: Path) -> None:
    early, late, mixed = tmp_path / "early", tmp_path / "late", tmp_path / "mixed"
    _save_two_checkpoints(early, late)
    # The late set with rank 0's file of the early one, its manifest updated to match.
    shutil.copytree(next(late.glob("ckpt-*")), mixed)
    shard = mixed / "mlbfgs-rank00000-of-00002.npz"
    shutil.copy(next(early.glob("ckpt-*")) / shard.name, shard)
    manifest = json.loads((mixed / "manifest.json").read_text())
    manifest["files"][shard.name] = shard.stat().st_size
    (mixed / "manifest.json").write_text(json.dumps(manifest))

    problem = NoisyQuadratic(SHAPES, seed=9, noise=0.1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, **CONFIG)
    opt.step(problem.gradient(1, params))
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=r"from steps \[3, 5\], the manifest says 5"):
        load_sharded(opt, mixed)
    assert_unchanged(before, params, opt)
    # The consistent sets load (on one process, adopting the 2-rank partition).
    load_sharded(opt, late)
    assert opt.step_count == 5 and len(opt.layouts) == 2
    assert [s["pairs_pushed"] for s in opt.stats()] == [1, 1]
