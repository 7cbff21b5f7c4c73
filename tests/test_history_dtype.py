"""A curvature history stored in half precision (``history_dtype``): the scaled rows, the
products against a float64 reference, the memory, resume and the torch adapter."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import array_api_compat.numpy as xp
import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic
from thread_world import ThreadComm, run_world

import mlbfgs
from mlbfgs.checkpoint import load_sharded, save_sharded
from mlbfgs.core import CurvatureHistory, Kernels, compact_form, precondition, two_loop
from mlbfgs.core.history import ROW_PEAK_EXPONENT

SHAPES = [(3, 4), (5,), (2, 2, 2), (6,)]
CONFIG: dict[str, Any] = {"lr": 0.05, "update_every": 2, "history": 3}


def tiny_pairs(n: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs whose entries (1e-9 .. 1e-6) are subnormal or zero in unscaled float16."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        s = rng.standard_normal(n) * 1e-6 * rng.uniform(1e-3, 1.0, n)
        pairs.append((s, s * rng.uniform(0.5, 2.0, n)))
    return pairs


def history_of(pairs: list[tuple[np.ndarray, np.ndarray]], dtype: Any) -> CurvatureHistory:
    history = CurvatureHistory.empty(xp, 3, pairs[0][0].shape[0], dtype, "cpu")
    for s, y in pairs:
        history.push(s.astype(np.float32), y.astype(np.float32), Kernels(xp))
    return history


def test_half_rows_are_scaled_by_powers_of_two_and_keep_tiny_entries() -> None:
    pairs = tiny_pairs(200, 4)
    history = history_of(pairs, np.float16)
    assert history.scales is not None
    for row in range(6):
        scale = float(history.scales[row])
        assert math.frexp(scale)[0] == 0.5  # a power of two
        peak = float(np.abs(history.pairs[row].astype(np.float64)).max())
        assert 2.0 ** (ROW_PEAK_EXPONENT - 1) <= peak < 2.0**ROW_PEAK_EXPONENT
    s_hist, _ = history.chronological(xp)
    newest_s = pairs[-1][0]
    # float16's 11 bits, entry by entry, where unscaled storage would flush most to zero
    np.testing.assert_allclose(s_hist[-1], newest_s, rtol=2.0**-11, atol=0)
    assert np.count_nonzero(newest_s.astype(np.float16)) < newest_s.size


def test_gram_matrices_are_the_products_of_the_stored_rows() -> None:
    history = history_of(tiny_pairs(300, 5, seed=1), np.float16)
    s_hist, y_hist = (rows.astype(np.float64) for rows in history.chronological(xp))
    slots = history.order
    for gram, exact in ((history.s_dot_y, s_hist @ y_hist.T), (history.y_dot_y, y_hist @ y_hist.T)):
        # float32 accumulation: to 1e-6 of the largest (diagonal) entry
        np.testing.assert_allclose(
            gram[np.ix_(slots, slots)], exact, rtol=0, atol=1e-6 * np.abs(exact).max()
        )


@pytest.mark.parametrize("g_dtype", [np.float32, np.float64])
def test_half_history_gives_the_two_loop_of_its_pairs_and_nearly_the_float64_one(g_dtype) -> None:
    pairs = tiny_pairs(400, 5, seed=2)
    g = np.random.default_rng(3).standard_normal(400).astype(g_dtype)
    kernels = Kernels(xp)
    half, full = history_of(pairs, np.float16), history_of(pairs, np.float64)
    got = precondition(half, compact_form(xp, half), g, kernels.project(half.pairs, g), kernels)
    assert got.dtype == g_dtype
    s_hist, y_hist = (rows.astype(np.float64) for rows in half.chronological(xp))
    own = two_loop(g.astype(np.float64), s_hist, y_hist)
    np.testing.assert_allclose(got, own, rtol=0, atol=1e-5 * np.abs(own).max())
    g64 = g.astype(np.float64)
    reference = precondition(full, compact_form(xp, full), g64, full.pairs @ g64, kernels)
    assert np.linalg.norm(got - reference) < 1e-2 * np.linalg.norm(reference)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_newest_pair_comes_back_in_the_vectors_dtype(dtype: Any) -> None:
    """Pair momentum mixes it into the next pair: a half-precision scale of 2^-34 would
    be zero in float16, so decoding goes through float32."""
    history = history_of(tiny_pairs(50, 2, seed=4), np.float16)
    newest = history.newest(dtype)
    assert newest is not None
    s_hist, y_hist = history.chronological(xp)
    for got, want in zip(newest, (s_hist[-1], y_hist[-1]), strict=True):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want.astype(dtype))


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
    m, n = CONFIG["history"], sum(math.prod(s) for s in SHAPES)
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
    hyper = {"lr": 0.05, "history": 3, "update_every": 2, "history_dtype": "bfloat16"}
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


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_half_history_matches_numpy_float64_closely(dtype_name: str) -> None:
    torch = pytest.importorskip("torch")
    pairs = tiny_pairs(500, 4, seed=7)
    kernels = mlbfgs.backends.kernels_for(array_api_compat_torch())
    history = CurvatureHistory.empty(
        array_api_compat_torch(), 3, 500, getattr(torch, dtype_name), "cpu"
    )
    for s, y in pairs:
        history.push(torch.from_numpy(s).float(), torch.from_numpy(y).float(), kernels)
    g = torch.from_numpy(np.random.default_rng(8).standard_normal(500)).float()
    form = compact_form(array_api_compat_torch(), history)
    got = precondition(history, form, g, kernels.project(history.pairs, g), kernels)
    full = history_of(pairs, np.float64)
    g64 = g.double().numpy()
    reference = precondition(full, compact_form(xp, full), g64, full.pairs @ g64, Kernels(xp))
    tolerance = 5e-2 if dtype_name == "bfloat16" else 1e-2
    assert np.linalg.norm(got.double().numpy() - reference) < tolerance * np.linalg.norm(reference)


def array_api_compat_torch() -> Any:
    import array_api_compat.torch

    return array_api_compat.torch


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


def test_a_half_state_without_scales_loads_as_rows_of_scale_one() -> None:
    """States saved before rows had scales hold unscaled float16 rows: scale 1 each."""
    _, half = quadratic_run("float16", steps=10)
    state = half.state_dict()
    scales = state.pop("block0.history.scales")
    unscaled = state["block0.history.pairs"].astype(np.float64) * scales[:, None]
    state["block0.history.pairs"] = unscaled.astype(np.float16)
    with_ones = {**state, "block0.history.scales": np.ones_like(scales)}
    results = []
    for loaded_state in (state, with_ones):
        problem = NoisyQuadratic(SHAPES, seed=4, noise=0.05)
        params = [p.copy() for p in half.params]
        opt = mlbfgs.MLBFGS(params, history_dtype="float16", **CONFIG)
        opt.load_state_dict(loaded_state)
        for t in range(11, 20):
            opt.step(problem.gradient(t, params))
        results.append(params)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


# -- the storage's edges: ranges, dtypes, and what a state may hold ------------------------


@pytest.mark.parametrize(("dtype", "magnitude"), [(np.float64, 1e-50), (np.float16, 1e-6)])
def test_rows_far_outside_float32_or_inside_float16_subnormals_are_stored_exactly_scaled(
    dtype: Any, magnitude: float
) -> None:
    """Scaling happens in float32 or wider and in two exact halves: float64 differences of
    1e-50 (below float32's range) and float16 subnormals both keep their leading bits."""
    rng = np.random.default_rng(5)
    s = (magnitude * rng.uniform(0.5, 1.0, 40)).astype(dtype)
    history = CurvatureHistory.empty(xp, 2, 40, np.float16, "cpu")
    history.push(s, 2 * s, Kernels(xp))
    s_hist, y_hist = history.chronological(xp)
    assert s_hist.dtype == y_hist.dtype == np.float32
    expected = s.astype(np.float64)
    newest = history.newest(dtype)
    assert newest is not None and newest[0].dtype == dtype
    np.testing.assert_allclose(newest[0].astype(np.float64), expected, rtol=2.0**-11, atol=0)
    np.testing.assert_allclose(newest[1].astype(np.float64), 2 * expected, rtol=2.0**-11, atol=0)
    if dtype == np.float16:  # float16 input: every bit survives the exact scaling
        np.testing.assert_array_equal(s_hist[0], s.astype(np.float32))


def test_half_gradients_of_small_norm_keep_float32_coefficients() -> None:
    """Scaled rows peak near 2^15, so the coefficients that multiply them are 2^-15 of
    H g's entries: for H g of 1e-3 they are float16 subnormals, kept float32."""
    pairs = tiny_pairs(200, 3, seed=9)
    half = history_of(pairs, np.float16)
    g = (1e-3 * np.random.default_rng(10).standard_normal(200)).astype(np.float16)
    kernels = Kernels(xp)
    got = precondition(half, compact_form(xp, half), g, kernels.project(half.pairs, g), kernels)
    s_hist, y_hist = (rows.astype(np.float64) for rows in half.chronological(xp))
    own = two_loop(g.astype(np.float64), s_hist, y_hist)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, own, rtol=0, atol=2e-3 * np.abs(own).max())


def test_chronological_rows_of_a_half_history_are_float32() -> None:
    history = history_of(tiny_pairs(30, 2), np.float16)
    s_hist, y_hist = history.chronological(xp)
    assert s_hist.dtype == y_hist.dtype == np.float32


def test_a_float32_history_for_float64_parameters() -> None:
    """Not half precision (no scales): the products accumulate in float64, and the newest
    pair comes back as float64 for pair momentum."""
    rng = np.random.default_rng(6)
    kernels = Kernels(xp)
    pairs = rng.standard_normal((4, 50)).astype(np.float32)
    g = rng.standard_normal(50)
    projected = kernels.project(pairs, g)
    assert projected.dtype == np.float64
    np.testing.assert_allclose(projected, pairs.astype(np.float64) @ g, rtol=1e-13)
    coefficients = rng.standard_normal(4)
    combined = kernels.combine(pairs, coefficients, 0.5, g)
    assert combined.dtype == np.float64
    exact = coefficients @ pairs.astype(np.float64) + 0.5 * g
    np.testing.assert_allclose(combined, exact, rtol=0, atol=1e-14 * np.abs(exact).max())
    history = CurvatureHistory.empty(xp, 2, 50, np.float32, "cpu")
    assert history.scales is None
    history.push(g, 2 * g, kernels)
    newest = history.newest(np.float64)
    assert newest is not None and newest[0].dtype == np.float64
    np.testing.assert_array_equal(newest[0], g.astype(np.float32).astype(np.float64))
    params = [np.ones(6), np.ones(3)]
    opt = mlbfgs.MLBFGS(params, history_dtype="float32", pair_momentum=0.5, **CONFIG)
    problem = NoisyQuadratic([(6,), (3,)], seed=2)
    for t in range(1, 12):
        opt.step(problem.gradient(t, params))
    assert opt.stats()[0]["pairs_pushed"] > 1 and all(np.isfinite(p).all() for p in params)


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
    s_hist, _ = history.chronological(array_api_compat_torch())
    assert s_hist.dtype == torch.float32 and s_hist.shape == (3, 31)
    stored = history.pairs[history.order[-1]].float() * float(history.scales[history.order[-1]])
    assert torch.equal(s_hist[-1], stored)
