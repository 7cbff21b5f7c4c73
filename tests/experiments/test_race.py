"""The optimizer race (mlbfgs.experiments.race): AlgoPerf's scoring on hand-computed
cases, the protocol on made-up runs, the workloads and optimizers on a few steps, and
(quick) the whole command, which must not see mL-BFGS's defaults diverge."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from race_fakes import fake_worker

from mlbfgs.cli import main
from mlbfgs.experiments.convergence.runs import train
from mlbfgs.experiments.convergence.suite import median
from mlbfgs.experiments.race import (
    PEERS,
    WORKLOADS,
    Outcome,
    Peer,
    RaceKey,
    RaceProtocol,
    RaceResult,
    mlbfgs_variant,
    run,
    run_race,
    scoring,
    standings,
    targets,
    total_runs,
)
from mlbfgs.experiments.race.peers import (
    FACTORIES,
    NEEDS,
    MuonWithAdamW,
    hidden_matrices,
    unit_blocks,
)

INF = math.inf


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch and one BLAS thread, as the race's runs have: two of each on two busy
    cores made a few SOAP steps take 15 s instead of 3, a quadratic's QR 9 s instead of
    0.1."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(before)


# --- scoring ------------------------------------------------------------------------


def test_ratios_divide_by_the_best_and_cut_above_max_tau() -> None:
    times = [[1.0, 10.0, 3.0], [2.0, 40.0, 3.0], [4.5, 41.0, INF]]
    r = scoring.ratios(times)
    assert r.tolist() == [[1.0, 1.0, 1.0], [2.0, 4.0, 1.0], [INF, INF, INF]]
    assert scoring.ratios([[1.0], [4.0]]).tolist() == [[1.0], [4.0]]  # 4 itself is kept


def test_a_workload_every_optimizer_missed_counts_as_missed_for_all() -> None:
    r = scoring.ratios([[INF, 1.0], [INF, 2.0]])
    assert np.isnan(r[:, 0]).all() and r[:, 1].tolist() == [1.0, 2.0]
    rho = scoring.profile(r, [1.0, 2.0, 4.0])
    assert rho.tolist() == [[0.5, 0.5, 0.5], [0.0, 0.5, 0.5]]  # out of 2 workloads, not 1


def test_profile_and_score_by_hand() -> None:
    # A is fastest on both workloads; B is 2x slower on the first, as fast on the second.
    r = scoring.ratios([[1.0, 5.0], [2.0, 5.0]])
    tau = [1.0, 2.0, 3.0, 4.0]
    rho = scoring.profile(r, tau)
    assert rho.tolist() == [[1.0, 1.0, 1.0, 1.0], [0.5, 1.0, 1.0, 1.0]]
    # B's trapezoids: (0.5 + 1)/2 + 1 + 1 = 2.75 over a span of 3.
    assert scoring.score(rho, tau) == pytest.approx([1.0, 2.75 / 3])


def test_benchmark_on_algoperf_tau_grid() -> None:
    tau = scoring.taus()
    assert len(tau) == 100 and tau[0] == 1.0 and tau[-1] == 4.0
    rho, b = scoring.benchmark([[1.0, 1.0], [1.0, INF], [INF, INF]])
    assert b == pytest.approx([1.0, 0.5, 0.0])
    assert rho[1].tolist() == [0.5] * 100
    # Ratio 2.5 on the one workload: rho = 0 up to tau_49 = 2.4848, 1 from tau_50 = 2.5152;
    # 2.5 is the midpoint, so the trapezoids add up to 4 - 2.5 = 1.5 exactly.
    rho, b = scoring.benchmark([[2.0], [5.0]])
    assert rho[1, 49] == 0.0 and rho[1, 50] == 1.0 and b[1] == pytest.approx(0.5)


def test_scoring_refuses_nan_and_non_positive_times() -> None:
    with pytest.raises(ValueError, match="NaN"):
        scoring.ratios([[math.nan]])
    with pytest.raises(ValueError, match="> 0"):
        scoring.ratios([[0.0]])
    with pytest.raises(ValueError, match="non-empty"):
        scoring.ratios([1.0, 2.0])


def test_median_counts_inf() -> None:
    assert median([INF, 3.0, 1.0]) == 3.0
    assert median([INF, INF, 1.0]) == INF
    assert math.isnan(median([]))


# --- the protocol on made-up runs --------------------------------------------------------


def test_evaluations_are_evenly_spaced_and_end_at_the_budget() -> None:
    key = RaceProtocol().key("lm-char", "SGD", 0.1, 1)
    assert key.iterations == 2000 and key.evaluated() == list(range(50, 2001, 50))
    steps = RaceProtocol().key("mlp64", "SGD", 0.1, 1).evaluated()
    assert len(steps) == 40 and steps[0] == 23 and steps[-1] == 900
    assert RaceKey("x", "SGD", 0.1, 1, 5, 40).evaluated() == [1, 2, 3, 4, 5]


def test_grids_are_centred_on_each_default() -> None:
    protocol = RaceProtocol()
    assert protocol.grid("SGD") == pytest.approx([0.1 / 9, 0.1 / 3, 0.1, 0.3, 0.9])
    assert protocol.grid("Muon")[2] == 0.02 and protocol.grid("SOAP")[2] == 3e-3
    assert protocol.widened("SGD", 0.9) == pytest.approx(2.7)
    assert protocol.widened("SGD", protocol.grid("SGD")[0]) == pytest.approx(0.1 / 27)
    assert protocol.widened("SGD", 0.3) is None
    assert RaceProtocol.quick().widened("SGD", 0.1) is None


def test_the_race_widens_at_an_edge_and_evaluates_the_chosen_lr() -> None:
    protocol = RaceProtocol(workloads=("mlp32",), optimizers=("SGD", "AdamW"))
    # SGD's best is beyond the top of its grid (0.9): widened to 2.7. AdamW's is inside.
    worker = fake_worker({"SGD": 3.0, "AdamW": 1e-3})
    counted = []
    outcomes = run_race(protocol, ["mlp32"], ["SGD", "AdamW"], 1, counted.append, worker)
    assert sum(counted) == total_runs(protocol, ["mlp32"], ["SGD", "AdamW"]) == 2 * (5 + 1 + 3)
    sgd, adamw = outcomes
    assert [r.key.lr for r in sgd.grid][-1] == pytest.approx(2.7) and sgd.lr == pytest.approx(2.7)
    assert len(adamw.grid) == 5 and adamw.lr == 1e-3
    assert [r.key.seed for r in sgd.runs] == [1, 2, 3]
    assert {r.key.lr for r in sgd.runs} == {sgd.lr}


def outcome(name: str, finals: list[list[float]], seconds: float = 1.0) -> Outcome:
    """An outcome whose seed s reaches each value of finals[s] at steps 10, 20, ..."""
    runs = []
    for seed, values in enumerate(finals, start=1):
        key = RaceKey("w", name, 0.1, seed, 10 * len(values), len(values))
        steps = [10 * (i + 1) for i in range(len(values))]
        times = [seconds * s for s in steps]
        runs.append(RaceResult(key, [0, *steps], [10.0, *values], [0.0, *times]))
    return Outcome("w", name, [], 0.1, runs)


def test_target_is_the_best_baseline_median_and_times_are_medians() -> None:
    outcomes = [
        outcome("SGD", [[3.0, 2.0], [3.0, 2.5], [3.0, 1.5]]),  # median final 2.0
        outcome("AdamW", [[2.0, 2.2], [4.0, 2.1], [9.0, 2.3]]),  # median final 2.2
        outcome("NAdamW", [[5.0, math.nan]] * 3),  # diverged: inf
        outcome("mL-BFGS", [[1.0, 1.0], [1.0, 1.0], [3.0, 3.0]], seconds=3.0),
    ]
    found = targets(outcomes)
    assert found["w"].value == 2.0 and found["w"].baseline == "SGD"
    assert outcomes[0].to_target(2.0) == (20.0, 20.0)  # seeds: 20, inf, 20
    assert outcomes[1].to_target(2.0) == (INF, INF)  # never at or below 2.0
    assert outcomes[3].to_target(2.0) == (10.0, 30.0)  # seeds: 10, 10, inf
    result = standings(outcomes, found, RaceProtocol())
    assert result.steps[:, 0].tolist() == [20.0, INF, INF, 10.0]
    assert result.step_ratios[:, 0].tolist() == [2.0, INF, INF, 1.0]
    assert result.score_steps[3] == 1.0 and result.score_steps[1] == 0.0
    assert result.second_ratios[:, 0].tolist() == [1.0, INF, INF, 1.5]


def test_no_target_when_every_baseline_diverged() -> None:
    outcomes = [outcome("SGD", [[math.nan]]), outcome("mL-BFGS", [[1.0]])]
    found = targets(outcomes)
    assert math.isnan(found["w"].value) and found["w"].baseline is None
    result = standings(outcomes, found, RaceProtocol())
    assert np.isinf(result.steps).all() and (result.score_steps == 0.0).all()


# --- workloads and optimizers on a few steps ----------------------------------------------


def test_lm_char_starts_at_the_uniform_loss_and_holds_out_the_end() -> None:
    from mlbfgs.experiments.race.lm import _encoded, corpus

    text, vocabulary = corpus()
    train_codes, validation, size = _encoded()
    assert len(text) > 100_000 and size == len(vocabulary)
    assert len(validation) == math.ceil(0.1 * len(text)) and len(train_codes) + len(
        validation
    ) == len(text)
    problem = WORKLOADS["lm-char"].build(0, 3)
    assert problem.train_loss() == pytest.approx(math.log(size), abs=0.05)
    assert math.isfinite(problem.held_out())  # type: ignore[attr-defined]


def test_muon_takes_hidden_matrices_only() -> None:
    lm = WORKLOADS["lm-char"].build(0, 2)
    hidden = hidden_matrices(lm)
    model = lm.model  # type: ignore[attr-defined]
    assert len(hidden) == 8 and all(p.ndim == 2 for p in hidden)
    assert not {id(model.embed.weight), id(model.position.weight), id(model.head.weight)} & {
        id(p) for p in hidden
    }
    assert len(hidden_matrices(WORKLOADS["cnn-digits"].build(0, 2))) == 1  # not the convs
    assert hidden_matrices(WORKLOADS["logistic"].build(0, 2)) == []  # the classifier only
    assert hidden_matrices(WORKLOADS["quad-1e2"].build(0, 2)) == []
    ae = WORKLOADS["autoencoder"].build(0, 2)
    assert [p.shape[0] for p in hidden_matrices(ae)] == [400, 200, 100, 30, 100, 200, 400]


def test_muons_adamw_part_follows_the_schedule_at_the_authors_ratio() -> None:
    problem = WORKLOADS["mnist-mlp"].build(0, 3)
    optimizer = MuonWithAdamW(problem, 0.02)
    train(problem, optimizer, 0.02, 1, lambda t: True)
    muon, adamw = optimizer.param_groups
    assert muon["lr"] == 0.02 and adamw["lr"] == pytest.approx(0.02 * 3e-4 / 0.02)
    assert len(muon["params"]) == 1 and len(adamw["params"]) == 3


@pytest.mark.parametrize("label", list(PEERS))
def test_every_optimizer_trains_the_new_workloads_without_weight_decay(label: str) -> None:
    if PEERS[label].kind in NEEDS:
        pytest.importorskip("pytorch_optimizer")
    problem = WORKLOADS["mnist-mlp"].build(0, 5)
    optimizer = PEERS[label].make(problem, PEERS[label].default_lr)
    trace = train(problem, optimizer, PEERS[label].default_lr, 5, lambda t: t == 5)
    assert trace.final_loss < trace.loss[0]
    assert all(g.get("weight_decay", 0.0) == 0.0 for g in optimizer.param_groups)


def test_the_race_shampoo_preconditions_where_the_package_defaults_would_not() -> None:
    """pytorch_optimizer's ScalableShampoo with its defaults (inverse roots every 1000
    steps, the identity before) is Nesterov SGD on the race's budgets: the reason for the
    race's settings (roots every 10 steps, RMSProp grafting)."""
    pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer import ScalableShampoo

    a, b, c = (WORKLOADS["mlp32"].build(0, 40) for _ in range(3))
    optimizers = [
        ScalableShampoo(a.params, lr=0.01),
        torch.optim.SGD(b.params, lr=0.01, momentum=0.9, nesterov=True),
        PEERS["Shampoo"].make(c, 0.001),
    ]
    for problem, optimizer in zip((a, b, c), optimizers, strict=True):
        train(problem, optimizer, float(optimizer.param_groups[0]["lr"]), 40, lambda t: False)
    for p, q in zip(a.params, b.params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    gap = max(float((p - q).abs().max()) for p, q in zip(c.params, b.params, strict=True))
    assert gap > 1e-2


def test_an_mlbfgs_variant_is_one_entry() -> None:
    peer = mlbfgs_variant("mL-BFGS T=10", {"update_every": 10})
    assert peer == Peer("mL-BFGS T=10", "mlbfgs", 0.1, {"update_every": 10})
    problem = WORKLOADS["mlp32"].build(0, 2)
    assert peer.make(problem, 0.1).defaults["update_every"] == 10


def test_unit_blocks_are_weight_rows_with_their_bias() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1, False)
    )
    assert unit_blocks(list(model.parameters())) == [
        [(0, 0, 3), (1, 0, 1)],
        [(0, 3, 6), (1, 1, 2)],
        [(2, 0, 2)],
    ]
    conv = [torch.zeros(4, 1, 3, 3), torch.zeros(4), torch.zeros(5, 3), torch.zeros(4)]
    assert unit_blocks(conv) == [
        [(0, 0, 36)],
        [(1, 0, 4)],
        *([(2, 3 * r, 3 * r + 3)] for r in range(5)),
        [(3, 0, 4)],
    ]
    problem = WORKLOADS["mnist-mlp"].build(0, 2)
    optimizer = PEERS["mL-BFGS units"].make(problem, 0.1)
    assert len(optimizer.defaults["blocks"]) == 128 + 10


def test_an_optimizer_that_raises_is_a_diverged_run(monkeypatch: pytest.MonkeyPatch) -> None:
    class Boom(torch.optim.SGD):
        calls = 0

        def step(self, closure: object = None) -> None:  # type: ignore[override]
            if self.calls == 2:
                raise RuntimeError("linalg.eigh: failed to converge\nmore")
            self.calls += 1
            super().step()

    monkeypatch.setitem(FACTORIES, "boom", lambda p, lr, o: Boom(p.params, lr=lr))
    monkeypatch.setitem(PEERS, "Boom", Peer("Boom", "boom", 0.01))
    result = run(RaceKey("mlp32", "Boom", 0.01, 0, 10, 10))
    assert result.diverged and result.error == "RuntimeError: linalg.eigh: failed to converge"
    assert result.iterations == [0, 1, 2, 3] and math.isnan(result.loss[-1])


# --- the command -----------------------------------------------------------------------


def test_names_and_baselines_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["reproduce", "race", "--quick", "--out", str(tmp_path)]
    assert main([*base, "--workloads", "mlp32,nope"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "unknown workload(s) ['nope']" in err
    assert main([*base, "--optimizers", "mL-BFGS,Muon"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "must include one of AdamW, NAdamW, SGD" in err


@pytest.mark.slow
def test_quick_race_defaults_never_diverge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The quick race end to end: mL-BFGS's defaults diverge on no workload and no seed at
    the lr they were tuned to, and the JSON and the plot are written."""
    assert main(["reproduce", "race", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("optimizer race (AlgoPerf-style)") and "B (steps)" in out
    raw = json.loads((tmp_path / "race.json").read_text())
    assert (tmp_path / "race.png").stat().st_size > 10_000
    made = sum(len(o["grid"]) + len(o["runs"]) for o in raw["outcomes"])
    assert len(list((tmp_path / "runs").glob("*.json"))) == made  # each run, for --resume
    mine = [o for o in raw["outcomes"] if o["optimizer"] == "mL-BFGS"]
    assert {o["workload"] for o in mine} == set(RaceProtocol.quick().workloads)
    for o in mine:
        at_lr = [r for r in o["grid"] if r["lr"] == o["lr"]] + o["runs"]
        assert len(at_lr) == 2 and not any(r["diverged"] for r in at_lr), o["workload"]
        assert all(r["metric"][-1] < 0.5 * r["metric"][0] for r in at_lr), o["workload"]
        assert all(r["iterations"][-1] == 200 for r in at_lr)  # past the 100-step warm-up
