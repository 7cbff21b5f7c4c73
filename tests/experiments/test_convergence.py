"""The convergence suite: its protocol on made-up runs, and (quick) the defaults never
diverge on any of its tasks."""

from __future__ import annotations

import math

import pytest

from mlbfgs.experiments.convergence import (
    TASKS,
    Outcome,
    Protocol,
    RunKey,
    RunResult,
    choose_lr,
    iterations_ratio,
    run_suite,
)


def result(lr: float, losses: list[float], seed: int = 0) -> RunResult:
    key = RunKey("mlp64", "SGD", lr, seed, 10 * (len(losses) - 1), 10)
    return RunResult(key, [10 * i for i in range(len(losses))], losses)


def test_diverged_means_non_finite_or_above_the_start() -> None:
    assert not result(0.1, [2.0, 1.0, 0.5]).diverged
    assert result(0.1, [2.0, 1.0, math.nan]).diverged
    assert result(0.1, [2.0, 1.0, 2.5]).diverged
    assert result(0.1, [2.0, math.inf]).diverged


def test_the_lr_with_the_lowest_final_loss_wins_among_stable_runs() -> None:
    grid = [
        result(0.01, [2.0, 1.0, 0.9]),
        result(0.1, [2.0, 0.5, 0.3]),
        result(1.0, [2.0, 0.1, math.nan]),  # lowest loss seen, but it diverged
    ]
    assert choose_lr(grid) == 0.1
    assert choose_lr([result(0.3, [1.0, 2.0]), result(0.1, [1.0, 3.0])]) == 0.1


def test_iterations_to_sgds_final_loss() -> None:
    sgd = [result(0.1, [2.0, 1.0, 0.5, 0.4], seed) for seed in (1, 2)]
    fast = [result(0.1, [2.0, 0.45, 0.3, 0.2], seed) for seed in (1, 2)]
    slow = [result(0.1, [2.0, 1.5, 1.0, 0.9], seed) for seed in (1, 2)]

    def outcome(runs: list[RunResult]) -> Outcome:
        return Outcome("mlp64", "x", [], 0.1, runs)

    assert iterations_ratio(outcome(fast), outcome(sgd)) == pytest.approx(20 / 30)
    assert iterations_ratio(outcome(sgd), outcome(sgd)) == 1.0
    assert iterations_ratio(outcome(slow), outcome(sgd)) == math.inf


def test_quick_protocol_keeps_the_middle_of_each_grid() -> None:
    quick = Protocol.quick()
    assert quick.grid("mlp64", "SGD") == [0.03, 0.1, 0.3]
    assert quick.grid("mlp64", "Adam") == pytest.approx([0.003, 0.01, 0.03])
    key = quick.key("mlp64", "SGD", 0.1, 1)
    assert key.iterations == TASKS["mlp64"].iterations // 4
    assert Protocol().grid("quad-1e6", "SGD") == list(TASKS["quad-1e6"].lr_grid)


@pytest.mark.slow
def test_quick_suite_defaults_never_diverge() -> None:
    """Every task, SGD and the defaults: at the tuned lr the defaults never diverge, and
    no more of their grid points diverge than SGD's."""
    outcomes = run_suite(list(TASKS), ["SGD", "mL-BFGS"], Protocol.quick(), 2, lambda _: None)
    mine = [o for o in outcomes if o.method == "mL-BFGS"]
    sgd = [o for o in outcomes if o.method == "SGD"]
    assert [o.seeds_diverged for o in mine] == [0] * len(TASKS)
    assert sum(o.grid_diverged for o in mine) <= sum(o.grid_diverged for o in sgd)
    for o in mine:  # and they learn: the final loss is well below the start
        assert all(r.final_loss < 0.5 * r.loss[0] for r in o.runs), o.task
