"""state_dict holds only arrays and scalars, and resuming is bitwise exact."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic

import mlbfgs

CONFIG = {"lr": 0.05, "update_every": 3, "history_size": 2, "blocks": [[2, 0], [1]]}


def fresh(problem: NoisyQuadratic, dtype=np.float64, **options):
    params = problem.initial(dtype)
    return params, mlbfgs.MLBFGS(params, **CONFIG, **options)


@pytest.mark.parametrize(("saved", "loading"), [("adam", "gamma"), ("gamma", "adam")])
def test_a_state_of_the_other_initial_matrix_is_refused_unchanged(saved, loading) -> None:
    """Pairs stored with h0="adam" live in scaled coordinates: read with H_0 = gamma I they
    would be another matrix, so the state names the mismatch and nothing changes."""
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.2)
    params, opt = fresh(problem, h0=saved)
    for t in range(1, 8):
        opt.step(problem.gradient(t, params))
    state = opt.state_dict()
    other_params, other = fresh(problem, h0=loading)
    other.step(problem.gradient(1, other_params))
    before = snapshot(other_params, other)
    says = "has" if saved == "adam" else "lacks"
    with pytest.raises(
        ValueError,
        match=rf"{says} second_moment: it was saved with another h0 than this "
        rf"optimizer's \({loading}\)",
    ):
        other.load_state_dict(state)
    assert_unchanged(before, other_params, other)


def test_a_negative_second_moment_is_refused() -> None:
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.2)
    params, opt = fresh(problem, h0="adam")
    opt.step(problem.gradient(1, params))
    state = opt.state_dict()
    state["block0.second_moment"] = -state["block0.second_moment"] - 1.0
    with pytest.raises(ValueError, match="'block0.second_moment'.*negative"):
        fresh(problem, h0="adam")[1].load_state_dict(state)


@pytest.mark.parametrize("h0", ["gamma", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stop", [0, 2, 7, 13])
def test_resume_through_savez_is_bitwise(tmp_path, dtype, stop, h0) -> None:
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.2)
    steps = 25
    params, opt = fresh(problem, dtype, h0=h0)
    for t in range(1, steps + 1):
        opt.step(problem.gradient(t, params))

    params2, opt2 = fresh(problem, dtype, h0=h0)
    for t in range(1, stop + 1):
        opt2.step(problem.gradient(t, params2))
    path = tmp_path / "ckpt.npz"
    np.savez(path, **opt2.state_dict(), allow_pickle=False)
    saved_params = [p.copy() for p in params2]

    resumed_params = saved_params
    resumed = mlbfgs.MLBFGS(resumed_params, **CONFIG, h0=h0)
    with np.load(path, allow_pickle=False) as data:
        resumed.load_state_dict(dict(data))
    assert resumed.step_count == stop
    for t in range(stop + 1, steps + 1):
        resumed.step(problem.gradient(t, resumed_params))
    for a, b in zip(params, resumed_params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _stats_bitwise(resumed.stats(), opt.stats())


def _stats_bitwise(a, b) -> bool:
    """Equal stats, value for value (NaN equal to NaN: mu and tau before the first pair)."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == y[k] or (np.isnan(x[k]) and np.isnan(y[k])) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def test_state_dict_is_a_snapshot() -> None:
    problem = NoisyQuadratic([(3,)], seed=1)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, update_every=1)
    opt.step(problem.gradient(1, params))
    state = opt.state_dict()
    theta = state["block0.averages.theta"].copy()
    opt.step(problem.gradient(2, params))
    np.testing.assert_array_equal(state["block0.averages.theta"], theta)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda s: s.pop("block0.history.pairs"), KeyError, "history.pairs"),
        (lambda s: s.pop("block1.stats.average_stalled"), KeyError, "stats.average_stalled"),
        (lambda s: s.update({"history_size": 3}), ValueError, "history_size"),
        (lambda s: s.update({"partition.pieces": _swap_first_pieces(s)}), ValueError, "partition"),
        (lambda s: s.update({"param_sizes": [6, 5, 5]}), ValueError, "param_sizes"),
        (
            lambda s: s.update({"block1.averages.theta": np.zeros(4)}),
            ValueError,
            "averages.theta",
        ),
        (
            lambda s: s.update({"block0.history.pairs": s["block0.history.pairs"].astype("f4")}),
            ValueError,
            "dtype",
        ),
        (lambda s: s.update({"block0.history.order": [0, 0]}), ValueError, "order"),
        (
            lambda s: s.update({"block1.averages.grad": [1.0] * 5}),
            TypeError,
            r"block1\.averages\.grad'\] is a list, not an array",
        ),
        (lambda s: s.pop("block1.averages.grad"), ValueError, "one of a pair"),
    ],
)
def test_bad_state_changes_nothing(edit, error, match) -> None:
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.2)
    params, opt = fresh(problem)
    for t in range(1, 12):
        opt.step(problem.gradient(t, params))
    state = opt.state_dict()
    edit(state)
    before = snapshot(params, opt)
    with pytest.raises(error, match=match):
        opt.load_state_dict(state)
    assert_unchanged(before, params, opt)


def _poison(key: str, value: float, index: tuple[int, ...] = (0,)):
    def edit(state):
        array = np.array(state[key], copy=True)
        array[index] = value
        state[key] = array

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        # Non-finite arrays: each would reach the parameters or freeze its block for good.
        *[
            (_poison(f"block0.{key}", bad), ValueError, rf"block0\.{key}'\] holds NaN")
            for key in (
                "averages.theta",
                "averages.grad",
                "averages.snapshot_theta",
                "averages.snapshot_grad",
                "momentum_buffer",
                "history.pairs",
            )
            for bad in (np.nan,)
        ],
        (_poison("block0.history.pairs", np.inf, (3, 0)), ValueError, "history.pairs'] holds"),
        (_poison("block0.history.s_dot_y", np.nan, (0, 1)), ValueError, "s_dot_y'] holds NaN"),
        (_poison("block0.history.y_dot_y", -np.inf, (1, 1)), ValueError, "y_dot_y'] holds NaN"),
        # A zero or negative Gram diagonal for a stored pair (a singular preconditioner).
        (
            _poison("block0.history.s_dot_y", 0.0, (1, 1)),
            ValueError,
            r"block0\.history\.s_dot_y'\] has a diag",
        ),
        (
            _poison("block0.history.y_dot_y", -1.0, (0, 0)),
            ValueError,
            r"block0\.history\.y_dot_y'\] has a diag",
        ),
        # Finite Gram matrices whose inverse is not: named, with what they give.
        (
            _poison("block0.history.s_dot_y", 1e308, (1, 0)),  # R[0, 1]: order [1, 0]
            ValueError,
            r"\['block0\.history\.s_dot_y'\] and \['block0\.history\.y_dot_y'\] give a "
            "non-finite preconditioner",
        ),
        # Counters must be integers, named by their key.
        (lambda s: s.update({"step": "abc"}), TypeError, r"state\['step'\] must be an integer"),
        (lambda s: s.update({"step": 3.7}), ValueError, r"state\['step'\] must be an integer"),
        (lambda s: s.update({"step": np.float64(4.0)}), ValueError, r"'step'\] must be an int"),
        (lambda s: s.update({"step": -1}), ValueError, r"'step'\] must be >= 0"),
        (lambda s: s.update({"block0.stats.pairs_pushed": 1.5}), ValueError, "pairs_pushed"),
        (
            lambda s: s.update({"block0.stats.pairs_pushed": 1}),
            ValueError,
            r"'block0\.stats\.pairs_pushed'\] is 1, fewer than the 2",
        ),
        (lambda s: s.update({"block0.stats.mu": "x"}), TypeError, r"block0\.stats\.mu"),
        (lambda s: s.update({"block0.stats.tau": "x"}), TypeError, "number, got a str"),
        (lambda s: s.update({"step": [3]}), TypeError, r"'step'\] must be an integer, got a list"),
        (lambda s: s.update({"step": np.array([3, 4])}), ValueError, r"'step'\] must be an int"),
        (lambda s: s.update({"format_version": 2}), ValueError, "format_version'] is 2"),
        (
            lambda s: s.update({"history_size": 2.5}),
            ValueError,
            r"'history_size'\] must be an integer",
        ),
        # The ring buffer fills slots 0..m-1: any other order breaks its next push.
        (lambda s: s.update({"block0.history.order": [1]}), ValueError, "slot order"),
        (lambda s: s.update({"block0.history.order": [0, 2]}), ValueError, "slot order"),
        (lambda s: s.update({"block0.history.order": [0.0, 1.0]}), ValueError, "integer"),
        (
            lambda s: s.update({"block0.history.order": ["a", 0]}),
            TypeError,
            r"'block0\.history\.order\[0\]'\] must be an integer, got a str",
        ),
        # The partition's lists must hold integers, three a piece (numpy.load makes arrays).
        (
            lambda s: s.update({"partition.sizes": np.array([3.0])}),
            ValueError,
            r"'partition\.sizes'\] must hold integers",
        ),
        (
            lambda s: s.update({"partition.pieces": np.asarray(s["partition.pieces"], float)}),
            ValueError,
            r"'partition\.pieces'\] must hold integers",
        ),
        (
            lambda s: s.update({"partition.pieces": s["partition.pieces"][:-1]}),
            ValueError,
            r"^state\['partition\.pieces'\] must hold three integers a piece$",
        ),
        (
            lambda s: s.update({"param_sizes": np.array([6.0, 5.0, 4.0])}),
            ValueError,
            r"'param_sizes'\] must hold integers",
        ),
        # Blocks named by whole-tensor indices were never released: no pieces, no load.
        (
            lambda s: s.update({"partition.indices": [0, 1, 2]}) or s.pop("partition.pieces"),
            KeyError,
            r"state is missing 'partition\.pieces'",
        ),
        (lambda s: s.update({"partition.sizes": [2, 2]}), ValueError, "partition.sizes"),
        (lambda s: s.update({"partition.sizes": [3, 0]}), ValueError, "partition.sizes"),
    ],
)
def test_bad_values_are_named_and_change_nothing(edit, error, match) -> None:
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.2)
    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=3, history_size=2)  # blocks=None: adopts
    for t in range(1, 14):
        opt.step(problem.gradient(t, params))
    state = opt.state_dict()
    assert state["block0.history.order"] == [1, 0]  # both slots taken, wrapped around
    edit(state)
    before = snapshot(params, opt)
    with pytest.raises(error, match=match):
        opt.load_state_dict(state)
    assert_unchanged(before, params, opt)


def test_a_state_read_back_from_savez_passes_the_checks(tmp_path) -> None:
    """numpy.load turns lists into arrays (an empty order into a float array)."""
    params = [np.ones(3)]
    opt = mlbfgs.MLBFGS(params)
    opt.step([np.ones(3)])
    np.savez(tmp_path / "s.npz", **opt.state_dict(), allow_pickle=False)
    with np.load(tmp_path / "s.npz") as data:
        assert data["block0.history.order"].dtype == np.float64
        opt.load_state_dict(dict(data))
    assert opt.step_count == 1


def test_loading_restores_the_statistics_exactly() -> None:
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.2)
    params, opt = fresh(problem)
    for t in range(1, 14):
        opt.step(problem.gradient(t, params))
    twin = mlbfgs.MLBFGS([p.copy() for p in params], **CONFIG)
    twin.load_state_dict(opt.state_dict())
    assert _stats_bitwise(twin.stats(), opt.stats())
    assert all(not np.isnan(s["tau"]) for s in opt.stats())


def _swap_first_pieces(state: dict) -> list[int]:
    """``partition.pieces`` with the first block's two pieces in the other order."""
    flat = list(state["partition.pieces"])
    return [*flat[3:6], *flat[0:3], *flat[6:]]
