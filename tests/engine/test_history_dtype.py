"""``history_dtype`` through the optimizer: memory and training, refused dtypes and states,
bitwise resume (``.npz``, sharded checkpoints, two thread ranks), and the torch adapter.
The storage itself is tested in ``test_history_storage.py``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic
from thread_world import ThreadComm, run_world

import mlbfgs
from mlbfgs.checkpoint import load_sharded, save_sharded

SHAPES = [(3, 4), (5,), (2, 2, 2), (6,)]
CONFIG: dict[str, Any] = {"lr": 0.05, "update_every": 2, "history_size": 3}


def quadratic_run(history_dtype: str | None, steps: int = 60) -> tuple[float, mlbfgs.MLBFGS]:
    problem = NoisyQuadratic(SHAPES, seed=4, noise=0.05)
    params = problem.initial(np.float32)
    opt = mlbfgs.MLBFGS(params, history_dtype=history_dtype, **CONFIG)
    start = problem.loss(params)
    for t in range(1, steps + 1):
        opt.step(problem.gradient(t, params))
    return problem.loss(params) / start, opt


def test_float16_history_halves_the_pairs_and_trains_as_float32() -> None:
    half_loss, half = quadratic_run("float16")
    full_loss, full = quadratic_run(None)
    m, n = CONFIG["history_size"], sum(math.prod(s) for s in SHAPES)
    gram_bytes = 2 * m * m * 8
    assert full.history_bytes() == 2 * m * n * 4 + gram_bytes
    assert half.history_bytes() == 2 * m * n * 2 + gram_bytes + 2 * m * 8  # + the scales
    assert half.stats()[0]["pairs_pushed"] == full.stats()[0]["pairs_pushed"] > 0
    assert half_loss < 0.1 and half_loss == pytest.approx(full_loss, rel=0.05)


@pytest.mark.parametrize(
    ("history_dtype", "match"),
    [("bfloat16", "history_dtype='bfloat16' is not a dtype of numpy"), ("int8", "history_dtype")],
)
def test_an_unavailable_history_dtype_is_refused_by_name(history_dtype: str, match: str) -> None:
    params = [np.ones(3, dtype=np.float32)]
    with pytest.raises(ValueError, match=match):
        mlbfgs.MLBFGS(params, history_dtype=history_dtype)


@pytest.mark.parametrize("stop", [3, 8])
def test_resume_through_savez_is_bitwise(tmp_path: Path, stop: int) -> None:
    _, uninterrupted = quadratic_run("float16", steps=14)
    problem = NoisyQuadratic(SHAPES, seed=4, noise=0.05)
    params = problem.initial(np.float32)
    opt = mlbfgs.MLBFGS(params, history_dtype="float16", **CONFIG)
    for t in range(1, stop + 1):
        opt.step(problem.gradient(t, params))
    np.savez(tmp_path / "state.npz", **opt.state_dict(), allow_pickle=False)
    resumed = mlbfgs.MLBFGS(params, history_dtype="float16", **CONFIG)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as data:
        resumed.load_state_dict(dict(data))
    for t in range(stop + 1, 15):
        resumed.step(problem.gradient(t, params))
    for got, want in zip(params, uninterrupted.params, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_state_of_another_history_dtype_is_refused_and_changes_nothing() -> None:
    _, full = quadratic_run(None, steps=10)
    _, half = quadratic_run("float16", steps=10)
    before = snapshot(half.params, half)
    with pytest.raises(ValueError, match="history_dtype"):
        half.load_state_dict(full.state_dict())
    assert_unchanged(before, half.params, half)
    with pytest.raises(ValueError, match="history_dtype"):
        full.load_state_dict(half.state_dict())


def sharded_run(comm: ThreadComm | None, steps: int, directory: Path | None = None) -> Any:
    problem = NoisyQuadratic(SHAPES, seed=6, noise=0.1)
    params = problem.initial(np.float32)
    blocks = [[0, 1], [2, 3]]  # the same blocks on one process and on two ranks
    opt = mlbfgs.MLBFGS(params, comm=comm, blocks=blocks, history_dtype="float16", **CONFIG)
    if directory is not None and comm is None:
        load_sharded(opt, directory)
        with np.load(directory / "params.npz") as saved:
            for i, p in enumerate(params):
                p[...] = saved[f"arr_{i}"]
    for t in range(opt.step_count + 1, steps + 1):
        opt.step(problem.gradient(t, params))
    if directory is not None and comm is not None:
        save_sharded(opt, directory)
        if comm.rank == 0:  # every rank holds all parameters after the all-gather
            np.savez(directory / "params.npz", *params)
    return params


def test_two_ranks_equal_one_process_and_their_checkpoint_resumes_on_one(tmp_path: Path) -> None:
    single = sharded_run(None, 16)
    for ranks_params in run_world(2, lambda comm: sharded_run(comm, 16)):
        for got, want in zip(ranks_params, single, strict=True):
            np.testing.assert_array_equal(got, want)
    run_world(2, lambda comm: sharded_run(comm, 7, tmp_path))
    for got, want in zip(sharded_run(None, 16, tmp_path), single, strict=True):
        np.testing.assert_array_equal(got, want)


# -- torch: bfloat16 and float16, through torch's own state machinery ----------------------


def test_torch_bfloat16_history_resumes_bitwise_through_state_dict(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch_cases import assert_same, batches, make_model, train

    import mlbfgs.torch as mtorch

    data = batches(12)
    hyper = {"lr": 0.05, "history_size": 3, "update_every": 2, "history_dtype": "bfloat16"}
    model = make_model()
    train(model, mtorch.MLBFGS(model.parameters(), **hyper), data)

    resumed = make_model()
    opt = mtorch.MLBFGS(resumed.parameters(), **hyper)
    train(resumed, opt, data[:7])
    engine = opt._engines[0]
    assert engine._blocks[0].history.pairs.dtype == torch.bfloat16
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = mtorch.MLBFGS(resumed.parameters(), **hyper)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt"))  # pairs arrive cast to float32
    train(resumed, fresh, data[7:])
    assert_same(model, resumed)


def test_torch_bfloat16_engine_resumes_bitwise_through_sharded_npz(tmp_path: Path) -> None:
    """NumPy has no bfloat16: the ``.npz`` shard holds the pairs as float32, exactly."""
    torch = pytest.importorskip("torch")
    problem = NoisyQuadratic(SHAPES, seed=9, noise=0.1)

    def run(steps: int, save: bool = False, load: bool = False) -> list[Any]:
        params = [torch.from_numpy(p) for p in problem.initial(np.float32)]
        opt = mlbfgs.MLBFGS(params, history_dtype="bfloat16", **CONFIG)
        if load:
            load_sharded(opt, tmp_path)
            for p, saved in zip(params, torch.load(tmp_path / "params.pt"), strict=True):
                p.copy_(saved)
        for t in range(opt.step_count + 1, steps + 1):
            opt.step(
                [torch.from_numpy(g) for g in problem.gradient(t, [p.numpy() for p in params])]
            )
        if save:
            save_sharded(opt, tmp_path)
            torch.save(params, tmp_path / "params.pt")
        return params

    whole = run(15)
    run(6, save=True)
    for got, want in zip(run(15, load=True), whole, strict=True):
        assert torch.equal(got, want)


def test_a_half_state_without_scales_is_refused() -> None:
    """Every half-precision history has its rows' scales: a state without them (never
    released) is refused, naming the key, and the optimizer is unchanged."""
    _, half = quadratic_run("float16", steps=10)
    state = half.state_dict()
    del state["block0.history.scales"]
    opt = mlbfgs.MLBFGS([p.copy() for p in half.params], history_dtype="float16", **CONFIG)
    with pytest.raises(ValueError, match=r"'block0\.history\.scales'\] is missing"):
        opt.load_state_dict(state)
    assert opt.step_count == 0


def test_state_dict_copies_the_scales() -> None:
    _, opt = quadratic_run("float16", steps=6)
    state = opt.state_dict()
    saved = state["block0.history.scales"].copy()
    problem = NoisyQuadratic(SHAPES, seed=4, noise=0.05)
    for t in range(7, 16):
        opt.step(problem.gradient(t, opt.params))
    assert not np.array_equal(opt.state_dict()["block0.history.scales"], saved)
    np.testing.assert_array_equal(state["block0.history.scales"], saved)


@pytest.mark.parametrize(
    ("edit", "history_dtype", "match"),
    [
        (
            lambda s: s["block0.history.scales"].__setitem__(0, 3.0),
            "float16",
            r"^state\['block0\.history\.scales'\] must hold powers of two > 0$",
        ),
        (
            lambda s: s.update({"block0.averages.theta": s["block0.averages.theta"].astype("f8")}),
            "float16",
            r"'block0\.averages\.theta'\] has shape \(31,\) and dtype float64",
        ),
        (
            lambda s: s.update({"block0.history.pairs": s["block0.history.pairs"] + 2.0**-20}),
            "float16",
            r"'block0\.history\.pairs'\] has dtype float64 and values that float16, the "
            r"history's dtype, cannot hold exactly: was it saved with another history_dtype\?",
        ),
        (
            lambda s: None,
            None,
            r"'block0\.history\.scales'\] is present: the state's history was stored with "
            r"another history_dtype than this optimizer's \(float32\)",
        ),
    ],
)
def test_bad_half_states_are_named_and_change_nothing(edit, history_dtype, match) -> None:
    _, source = quadratic_run("float16", steps=10)
    state = source.state_dict()
    state["block0.history.pairs"] = state["block0.history.pairs"].astype(np.float64)  # widened
    edit(state)
    _, target = quadratic_run(history_dtype, steps=10)
    before = snapshot(target.params, target)
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    assert_unchanged(before, target.params, target)


def test_torch_float32_history_for_float64_parameters_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    problem = NoisyQuadratic(SHAPES, seed=3, noise=0.1)
    runs = []
    for wrap in (np.asarray, torch.from_numpy):
        params = [wrap(p) for p in problem.initial(np.float64)]
        opt = mlbfgs.MLBFGS(params, history_dtype="float32", **CONFIG)
        for t in range(1, 16):
            grads = problem.gradient(t, [np.asarray(p) for p in params])
            opt.step([wrap(g) for g in grads])
        runs.append([np.asarray(p) for p in params])
    for a, b in zip(*runs, strict=True):  # float32 Gram products, summed in another order
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())


def test_torch_half_histories_of_one_width_do_not_load_into_each_other() -> None:
    torch = pytest.importorskip("torch")
    problem = NoisyQuadratic(SHAPES, seed=3, noise=0.1)
    optimizers = {}
    for name in ("float16", "bfloat16"):
        params = [torch.from_numpy(p) for p in problem.initial(np.float32)]
        opt = mlbfgs.MLBFGS(params, history_dtype=name, **CONFIG)
        for t in range(1, 10):
            opt.step(
                [torch.from_numpy(g) for g in problem.gradient(t, [p.numpy() for p in params])]
            )
        optimizers[name] = opt
    with pytest.raises(ValueError, match=r"history\.pairs'\] has shape .* dtype torch\.float16"):
        optimizers["bfloat16"].load_state_dict(optimizers["float16"].state_dict())
    history = optimizers["bfloat16"]._blocks[0].history
    s_hist, _ = history.chronological(pytest.importorskip("array_api_compat.torch"))
    assert s_hist.dtype == torch.float32 and s_hist.shape == (3, 31)
    stored = history.pairs[history.order[-1]].float() * float(history.scales[history.order[-1]])
    assert torch.equal(s_hist[-1], stored)
