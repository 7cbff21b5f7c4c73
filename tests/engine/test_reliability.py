"""Misuse and awkward input that used to half-apply a step, poison the state or mislead:
read-only or overlapping parameters, half-precision overflow, the wrong rank blamed for a
NaN, and two threads stepping one optimizer."""

from __future__ import annotations

import threading
from typing import Any

import array_api_strict
import numpy as np
import pytest
from array_api_compat import array_namespace
from helpers import assert_unchanged, snapshot
from problems import NoisyQuadratic
from thread_world import ThreadComm, run_world

import mlbfgs
from mlbfgs.engine import ConcurrentUseError

# -- 1. everything is checked before anything changes ------------------------------------


def read_only(shape: tuple[int, ...]) -> np.ndarray:
    array = np.ones(shape)
    array.flags.writeable = False
    return array


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: [np.ones(3), read_only((2,))], r"params\[1\] is read-only"),
        (lambda: [np.broadcast_to(np.ones(1), (4,))], r"params\[0\] is read-only"),
        (
            lambda: (lambda b: [b[:6], b[4:]])(np.ones(10)),
            r"params\[1\] shares memory with params\[0\]",
        ),
        (
            lambda: (lambda b: [b[4:], np.ones(2), b[:6]])(np.ones(10)),
            r"params\[2\] shares .* params\[0\]",
        ),
        (
            lambda: (lambda b: [b[:, 1], b[1]])(np.ones((3, 3))),
            r"params\[1\] shares .* params\[0\]",
        ),
        (lambda: (lambda b: [b[::-1][:6], b[:5]])(np.ones(10)), r"params\[1\] shares"),
        (lambda: (lambda b: [b[:6], b[4:]])(array_api_strict.ones(10)), r"params\[1\] shares"),
    ],
)
def test_unwritable_or_overlapping_params_are_refused_by_name(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        mlbfgs.MLBFGS(make())


def test_views_that_do_not_overlap_are_accepted() -> None:
    buffer = np.zeros(12)
    params = [buffer[0::2], buffer[1::2]]  # interleaved: address ranges cross, no element shared
    opt = mlbfgs.MLBFGS(params, lr=1.0)
    opt.step([np.ones(6), 2 * np.ones(6)])
    np.testing.assert_array_equal(buffer, np.tile([-1.0, -2.0], 6))


def test_torch_params_that_cannot_be_updated_in_place_are_refused() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"params\[0\] requires grad.*p\.detach\(\)"):
        mlbfgs.MLBFGS([torch.ones(3, requires_grad=True)])
    with torch.inference_mode():
        frozen = torch.ones(3)
    with pytest.raises(ValueError, match=r"params\[1\] is an inference tensor"):
        mlbfgs.MLBFGS([torch.ones(2), frozen])
    weight = torch.ones(10)
    with pytest.raises(ValueError, match=r"params\[1\] shares memory with params\[0\]"):
        mlbfgs.MLBFGS([weight[:6], weight[4:]])
    half = torch.ones(10, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"params\[1\] shares memory"):
        mlbfgs.MLBFGS([half[:6], half[4:]])
    mlbfgs.MLBFGS([weight[:5], weight[5:]])


# -- 2. half precision: finite gradients are never taken for overflow ---------------------


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_float16_gradient_whose_square_norm_exceeds_float16_is_stepped(policy) -> None:
    params = [np.zeros(100, dtype=np.float16)]
    opt = mlbfgs.MLBFGS(params, lr=0.01, on_nonfinite=policy)
    opt.step([np.full(100, 30.0, dtype=np.float16)])  # g.g = 90000 > 65504
    assert opt.stats()[0]["skipped_steps"] == 0
    np.testing.assert_array_equal(params[0], np.float16(-0.3))


def test_torch_half_precision_products_accumulate_in_float32() -> None:
    torch = pytest.importorskip("torch")
    from mlbfgs.backends import kernels_for

    kernels = kernels_for(array_namespace(torch.ones(1)))
    for dtype in (torch.float16, torch.bfloat16):
        g = torch.full((100,), 30.0, dtype=dtype)
        pairs = torch.stack([g, -g, torch.full((100,), 1e-4, dtype=dtype)])
        assert float(kernels.dot(g, g)) == pytest.approx(90000.0, rel=1e-2)
        np.testing.assert_allclose(
            kernels.project(pairs, g).numpy(), [90000.0, -90000.0, 0.3], rtol=1e-2
        )
        out = kernels.combine(pairs, torch.tensor([1e5, 1e5, 1.0]), 1.0, g)
        assert out.dtype == dtype
        np.testing.assert_allclose(out.float().numpy(), 30.0 + 1e-4, rtol=1e-2)


def test_half_precision_products_see_every_slice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With slices of 8 columns instead of 2**24 elements, the float32-accumulating
    products still sum every column exactly once, and ``combine`` keeps both its terms."""
    import mlbfgs.core.kernels as kernels_module
    from mlbfgs.backends import kernels_for

    monkeypatch.setattr(kernels_module, "_SLICE", 32)  # 4 rows: 5 slices of <= 8 columns
    rng = np.random.default_rng(3)
    pairs = rng.standard_normal((4, 37)).astype(np.float16)
    g = rng.standard_normal(37).astype(np.float16)
    kernels = kernels_for(array_namespace(g))
    wide_pairs, wide_g = pairs.astype(np.float64), g.astype(np.float64)
    scale = (np.abs(wide_pairs) @ np.abs(wide_g)).max()
    projected = kernels.project(pairs, g)
    assert projected.dtype == np.float32
    np.testing.assert_allclose(projected, wide_pairs @ wide_g, rtol=0, atol=1e-6 * scale)
    assert float(kernels.dot(g, g)) == pytest.approx(wide_g @ wide_g, rel=1e-6)  # 2 slices
    coefficients = rng.standard_normal(4).astype(np.float32)
    out = kernels.combine(pairs, coefficients, 0.5, g)
    expected = coefficients.astype(np.float64) @ wide_pairs + 0.5 * wide_g
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


def loss_scaled_quadratic(dtype: Any, scale: float = 64.0) -> tuple[dict[str, int], float]:
    """A quadratic in ``dtype`` with loss-scaled gradients (x64: g.g overflows float16)."""
    problem = NoisyQuadratic([(3, 2), (5,), (4,)], seed=5, noise=0.05)
    params = problem.initial(dtype)
    opt = mlbfgs.MLBFGS(params, lr=0.1 / scale, update_every=3, history_size=4)
    start = problem.loss(params)
    for t in range(1, 301):
        g = problem.gradient(t, params)
        opt.step([(scale * x.astype(np.float64)).astype(dtype) for x in g])
    stats = opt.stats()[0]
    counts = {key: stats[key] for key in ("pairs_pushed", "pairs_rejected", "skipped_steps")}
    return counts, problem.loss(params) / start


def test_float16_quadratic_with_loss_scaling_behaves_as_float32() -> None:
    half, half_loss = loss_scaled_quadratic(np.float16)
    single, single_loss = loss_scaled_quadratic(np.float32)
    assert half == single == {"pairs_pushed": 99, "pairs_rejected": 0, "skipped_steps": 0}
    assert half_loss < 1e-3 and half_loss == pytest.approx(single_loss, rel=0.5)


# -- 5. the error names the rank the NaN came from -----------------------------------------


@pytest.mark.parametrize("average", [True, False])
def test_nonfinite_error_names_the_rank_it_came_from(average: bool) -> None:
    """A NaN in rank 1's gradient of block 0 (owned by rank 0): with averaging it reaches
    rank 0 through the reduce-scatter; every rank's error names rank 1 and the parameter.
    Without averaging rank 1's copy of block 0 is never read, so only rank 0's counts."""
    shapes = [(4,), (3,), (5,)]

    def body(comm: ThreadComm) -> str:
        params = [np.ones(s) for s in shapes]
        opt = mlbfgs.MLBFGS(
            params, comm=comm, blocks=[[0, 1], [2]], average_grads=average, on_nonfinite="raise"
        )
        grads = [np.ones(s) for s in shapes]
        if comm.rank == 1 or not average:
            grads[1][2] = np.nan
        before = snapshot(params, opt)
        with pytest.raises(mlbfgs.NonFiniteGradientError) as caught:
            opt.step(grads)
        assert_unchanged(before, params, opt)
        return str(caught.value)

    messages = run_world(2, body, return_errors=True)
    assert all(isinstance(m, str) for m in messages), messages
    assert messages[0] == messages[1]
    source = 1 if average else 0
    assert "block(s) [0] (params [0, 1]), owned by rank(s) [0]" in messages[0], messages[0]
    assert f"came from ranks [{source}] (rank {source}: grads[1])" in messages[0], messages[0]


def test_nonfinite_error_when_only_the_mean_overflows() -> None:
    def body(comm: ThreadComm) -> str:
        params = [np.ones(2, dtype=np.float32)]
        opt = mlbfgs.MLBFGS(params, comm=comm, on_nonfinite="raise")
        with pytest.raises(mlbfgs.NonFiniteGradientError) as caught, np.errstate(over="ignore"):
            opt.step([np.full(2, 3e38, dtype=np.float32)])  # finite; their sum is not
        return str(caught.value)

    (message, _) = run_world(2, body, return_errors=True)
    assert "every gradient is finite" in str(message), message


# -- 6. one thread at a time ------------------------------------------------------------------


def test_a_second_thread_stepping_gets_a_clear_error_and_the_state_survives() -> None:
    problem = NoisyQuadratic([(4,), (3,)], seed=3, noise=0.1)
    inside, release = threading.Event(), threading.Event()

    def slow_lr(t: int) -> float:  # the first step waits here, inside prepare()
        if t == 1:
            inside.set()
            assert release.wait(20)
        return 0.05

    params = problem.initial()
    opt = mlbfgs.MLBFGS(params, lr=slow_lr, update_every=2, history_size=2)
    first = threading.Thread(target=lambda: opt.step(problem.gradient(1, params)))
    first.start()
    assert inside.wait(20)
    try:
        for call in (
            lambda: opt.step(problem.gradient(1, params)),
            lambda: opt.state_dict(),
            lambda: opt.load_state_dict({}),
        ):
            with pytest.raises(ConcurrentUseError, match="another thread"):
                call()
    finally:
        release.set()
        first.join(20)
    reference = problem.initial()
    expected = mlbfgs.MLBFGS(reference, lr=0.05, update_every=2, history_size=2)
    for t in range(1, 8):
        if t > 1:
            opt.step(problem.gradient(t, params))
        expected.step(problem.gradient(t, reference))
    assert opt.step_count == 7
    for a, b in zip(params, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_optimizer_refuses_a_concurrent_step() -> None:
    torch = pytest.importorskip("torch")
    from mlbfgs.torch import MLBFGS

    weight = torch.nn.Parameter(torch.ones(3))
    opt = MLBFGS([weight], lr=0.1)
    inside, release = threading.Event(), threading.Event()

    def slow_closure() -> Any:  # evaluated inside step(), before any group is touched
        inside.set()
        assert release.wait(20)
        loss = (weight**2).sum()
        loss.backward()
        return loss

    first = threading.Thread(target=lambda: opt.step(slow_closure))
    first.start()
    assert inside.wait(20)
    try:
        with pytest.raises(ConcurrentUseError, match=r"MLBFGS\.step\(\)"):
            opt.step()
    finally:
        release.set()
        first.join(20)
    assert opt.engines[0].step_count == 1
    torch.testing.assert_close(weight.detach(), torch.full((3,), 0.8))
