"""Half-precision parameters keep float32 optimizer state (docs/backends.md, "Dtype and
device"), and ``stats()`` says when an average of Eq (5) stops moving.

Eq (5) with beta = 0.999 adds ``(1 - beta)(theta - M)`` per step: in bfloat16 (and often
in float16) that is below half an ulp of M, so an average kept in the parameters' dtype
never moves. These tests pin the dtypes, show that the float32 average follows the exact
Eq (5) of the (rounded) parameters where a half-precision one freezes, that the update is
rounded once, that checkpoints resume bitwise, and that the warning fires when an
average does freeze.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot

import mlbfgs

torch = pytest.importorskip("torch")
import mlbfgs.torch  # noqa: E402

BETA = 0.999
STEPS = 60


def half_params(library: str, dtype_name: str, n: int = 256, seed: int = 0) -> list[Any]:
    values = 1.0 + 0.5 * np.random.default_rng(seed).standard_normal(n)
    if library == "numpy":
        return [values.astype(getattr(np, dtype_name))]
    return [torch.tensor(values, dtype=getattr(torch, dtype_name))]


def as_float64(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return x.double().numpy()


def run(params: list[Any], steps: int = STEPS, **hyper: Any) -> tuple[mlbfgs.MLBFGS, list]:
    """Steps on ``loss = 0.5 * |theta|^2 * 0.1`` (gradient 0.1 theta); returns the optimizer
    and the parameters before each step (what Eq (5) averages)."""
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=10, **hyper)
    seen = []
    for _ in range(steps):
        seen.append(as_float64(params[0]).copy())
        g = 0.1 * params[0]
        opt.step([g])
    return opt, seen


CASES = [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16")]


@pytest.mark.parametrize(("library", "dtype_name"), CASES)
def test_half_precision_parameters_keep_float32_state(library: str, dtype_name: str) -> None:
    params = half_params(library, dtype_name)
    opt, _ = run(params, steps=25)
    block = opt._blocks[0]
    assert block.averages is not None and block.momentum_buffer is not None
    state = [
        block.averages.theta,
        block.averages.grad,
        block.averages.snapshot_theta,
        block.averages.snapshot_grad,
        block.momentum_buffer,
        block.history.pairs,
    ]
    assert all(str(x.dtype).endswith("float32") for x in state), [x.dtype for x in state]
    assert str(params[0].dtype).endswith(dtype_name)  # the parameters keep theirs
    assert opt.stats()[0]["pairs_pushed"] == 1


def test_history_dtype_still_stores_the_pairs_of_bfloat16_parameters_in_16_bits() -> None:
    params = half_params("torch", "bfloat16")
    opt, _ = run(params, steps=25, history_dtype="bfloat16")
    block = opt._blocks[0]
    assert block.history.pairs.dtype == torch.bfloat16
    assert block.averages is not None and block.averages.theta.dtype == torch.float32


@pytest.mark.parametrize(("library", "dtype_name"), CASES)
def test_an_average_that_half_precision_would_freeze_follows_eq_5(
    library: str, dtype_name: str
) -> None:
    """The exact Eq (5) of the parameters the optimizer saw, against the average it keeps
    and against the same recursion in the parameters' dtype (the state before)."""
    params = half_params(library, dtype_name)
    opt, seen = run(params)
    exact = seen[0].copy()
    half = seen[0].copy().astype(np.float32)  # narrowed below, step by step
    narrow = (
        (lambda x: x.astype(np.float16).astype(np.float32))
        if dtype_name == "float16"
        else (lambda x: torch.from_numpy(x).bfloat16().float().numpy())
    )
    for theta in seen[1:]:
        exact = BETA * exact + (1 - BETA) * theta
        half = narrow(half + narrow((1 - BETA) * (theta - half)))
    moved = exact - seen[0]
    kept = as_float64(opt._blocks[0].averages.theta)
    # float32 state: the average's movement is right to float32's rounding
    assert np.linalg.norm(kept - exact) <= 1e-4 * np.linalg.norm(moved)
    frozen_error = np.linalg.norm(half - exact) / np.linalg.norm(moved)
    assert frozen_error > 0.05, frozen_error  # a half-precision average goes wrong
    assert opt.stats()[0]["average_stalled"] == 0.0


@pytest.mark.parametrize(("library", "dtype_name"), CASES)
def test_the_update_is_rounded_once_from_float32(library: str, dtype_name: str) -> None:
    """Warm-up step 1 (heavy ball's buffer is g): theta_2 = round(theta_1 - lr g) with the
    difference taken in float32."""
    params = half_params(library, dtype_name, seed=2)
    theta = as_float64(params[0]).astype(np.float32)
    grad = params[0] * 3 + 1  # in the parameters' dtype
    mlbfgs.MLBFGS(params, lr=0.07).step([grad])
    expected = theta - np.float32(0.07) * as_float64(grad).astype(np.float32)
    if library == "numpy":
        np.testing.assert_array_equal(params[0], expected.astype(np.float16))
    else:
        assert torch.equal(params[0], torch.from_numpy(expected).to(params[0].dtype))


def test_float16_numpy_state_resumes_bitwise_and_half_vectors_are_refused() -> None:
    params = half_params("numpy", "float16")
    opt, _ = run(params, steps=23)
    state = opt.state_dict()
    twin_params = [params[0].copy()]
    twin = mlbfgs.MLBFGS(twin_params, lr=0.05, update_every=10)
    twin.load_state_dict(state)
    for _ in range(15):
        opt.step([0.1 * params[0]])
        twin.step([0.1 * twin_params[0]])
    np.testing.assert_array_equal(params[0], twin_params[0])

    # The state of half-precision parameters is float32; float16 vectors (the layout
    # before that, never released) are refused by name, and nothing changes.
    half = {
        key: value.astype(np.float16)
        if isinstance(value, np.ndarray) and value.dtype == np.float32
        else value
        for key, value in state.items()
    }
    before = snapshot(twin_params, twin)
    with pytest.raises(ValueError, match=r"'block0\.averages\.theta'.*float16.*float32"):
        twin.load_state_dict(half)
    assert_unchanged(before, twin_params, twin)


def test_torch_bfloat16_state_survives_torch_load_state_dict_uncast() -> None:
    """torch casts optimizer state to the parameters' dtype on load; the float32 state of
    bfloat16 parameters is taken as saved, so the resumed run is bitwise the original."""

    def model() -> Any:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))

    def steps(net: Any, opt: Any, start: int, stop: int) -> None:
        for t in range(start, stop):
            x = torch.randn(8, 6, generator=torch.Generator().manual_seed(t)).bfloat16()
            opt.zero_grad()
            net(x).float().pow(2).mean().backward()
            opt.step()

    hyper = {"lr": 0.05, "history_size": 3, "update_every": 4}
    net = model().bfloat16()
    opt = mlbfgs.torch.MLBFGS(net.parameters(), **hyper)
    steps(net, opt, 0, 13)
    saved = copy.deepcopy(opt.state_dict())  # its tensors are views of the live state
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    first = next(iter(saved["state"].values()))
    assert first["averages.theta"].dtype == torch.float32
    steps(net, opt, 13, 25)

    resumed_net = model().bfloat16()
    resumed_net.load_state_dict(weights)
    resumed = mlbfgs.torch.MLBFGS(resumed_net.parameters(), **hyper)
    resumed.load_state_dict(saved)
    steps(resumed_net, resumed, 13, 25)
    for a, b in zip(net.parameters(), resumed_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_stats_warn_when_the_parameter_average_stops_moving() -> None:
    """beta = 1 - 1e-9: in float32 the increment 1e-9 (theta - M) is below half an ulp of
    M, so the average freezes; the counters alone would not show it."""
    rng = np.random.default_rng(4)
    params = [1.0 + rng.standard_normal(300).astype(np.float32)]
    opt = mlbfgs.MLBFGS(params, lr=0.05, update_every=5, hessian_momentum=1 - 1e-9)
    for _ in range(20):
        opt.step([params[0] + 0.1 * rng.standard_normal(300).astype(np.float32)])
    with pytest.warns(RuntimeWarning, match=r"stopped moving \(block 0: 100\.0%"):
        stats = opt.stats()
    assert stats[0]["average_stalled"] == 1.0


def test_an_average_at_its_fixed_point_is_not_stalled() -> None:
    """Zero gradients: theta never moves and M_theta equals it, so s = 0 without any
    rounding lost (Eq (5)'s fixed point, not a stall); the share is 0, not 1."""
    params = [np.linspace(1.0, 2.0, 8)]
    opt = mlbfgs.MLBFGS(params, lr=0.1, update_every=2)
    for _ in range(6):
        opt.step([np.zeros(8)])
    assert opt.stats()[0]["average_stalled"] == 0.0


def test_no_warning_when_the_averages_move() -> None:
    params = half_params("torch", "bfloat16")
    opt, _ = run(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = opt.stats()
    assert stats[0]["average_stalled"] == 0.0
    fresh = mlbfgs.MLBFGS([np.ones(3)])
    assert np.isnan(fresh.stats()[0]["average_stalled"])  # no pair formed yet
