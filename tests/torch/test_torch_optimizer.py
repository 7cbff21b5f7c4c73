"""``mlbfgs.torch.MLBFGS`` against the engine, and with the torch tooling users rely on."""

from __future__ import annotations

import io
import math

import pytest

torch = pytest.importorskip("torch")

from torch_cases import (  # noqa: E402
    DEVICES,
    HYPER,
    assert_same,
    batches,
    engine_run,
    loss_of,
    make_model,
    train,
)

import mlbfgs  # noqa: E402
import mlbfgs.torch as mt  # noqa: E402


@pytest.mark.parametrize("h0", ["gamma", "adam"])
def test_same_trajectory_as_engine_bitwise(h0: str) -> None:
    data = batches(25)
    model, twin = make_model(), make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, weight_decay=1e-3, h0=h0, **HYPER)
    train(model, opt, data)
    engine_run(twin, data, lr=0.05, weight_decay=1e-3, h0=h0)
    assert_same(model, twin)
    assert opt.stats()[0][0]["pairs_pushed"] > 3  # preconditioned steps were taken


def test_h0_is_fixed_once_built() -> None:
    """The pairs of h0="adam" live in scaled coordinates: switching H_0 mid-run would read
    them as another matrix, so a group's h0 is structural, like its history."""
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, h0="adam", **HYPER)
    train(model, opt, batches(3))
    opt.param_groups[0]["h0"] = "gamma"
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['h0'\] changed from 'adam'"):
        train(model, opt, batches(1))


def test_param_groups_own_lr_weight_decay_and_blocks() -> None:
    data = batches(20)
    model, twin = make_model(), make_model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = mt.MLBFGS(
        [{"params": first, "lr": 0.02, "weight_decay": 0.01, "blocks": 2}, {"params": second}],
        lr=0.1,
        **HYPER,
    )
    # Blocks index into their own group: two blocks in group 0, one in group 1.
    assert [layout.indices for layout in opt.engines[0].layouts] == [(0,), (1,)]
    assert [layout.indices for layout in opt.engines[1].layouts] == [(0, 1)]
    train(model, opt, data)

    tfirst, tsecond = list(twin[0].parameters()), list(twin[2].parameters())
    e1 = mlbfgs.MLBFGS([p.detach() for p in tfirst], lr=0.02, weight_decay=0.01, blocks=2, **HYPER)
    e2 = mlbfgs.MLBFGS([p.detach() for p in tsecond], lr=0.1, **HYPER)
    for batch in data:
        twin.zero_grad()
        loss_of(twin, batch).backward()
        e1.step([p.grad for p in tfirst])
        e2.step([p.grad for p in tsecond])
    assert_same(model, twin)


@pytest.mark.parametrize("kind", ["cosine", "lambda"])
def test_lr_schedulers_drive_each_step(kind: str) -> None:
    data = batches(20)
    model, twin = make_model(), make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.1, **HYPER)
    if kind == "cosine":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=len(data)
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch)
    used: list[float] = []

    def before() -> None:
        used.append(opt.param_groups[0]["lr"])

    for batch in data:
        before()
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
        sched.step()
    expected = [
        0.05 * (1 + math.cos(math.pi * t / len(data))) if kind == "cosine" else 0.1 * 0.9**t
        for t in range(len(data))
    ]
    assert used == pytest.approx(expected, rel=1e-12)
    engine_run(twin, data, lr=lambda t: used[t - 1])
    assert_same(model, twin)


def test_grad_scaler_unscales_and_skips_non_finite_steps() -> None:
    data = batches(12)
    model, twin = make_model(), make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    for batch in data:
        opt.zero_grad()
        scaler.scale(loss_of(model, batch)).backward()
        scaler.step(opt)
        scaler.update()
    # A power-of-two scale unscales exactly: the same trajectory as without a scaler.
    engine_run(twin, data, lr=0.05)
    assert_same(model, twin)

    before = [p.detach().clone() for p in model.parameters()]
    steps_before = opt.engines[0].step_count
    opt.zero_grad()
    scaler.scale(loss_of(model, data[0])).backward()
    next(model.parameters()).grad[0, 0] = math.inf
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == scale / 2
    assert opt.engines[0].step_count == steps_before
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_clip_grad_norm_changes_the_gradient_the_optimizer_sees() -> None:
    data = batches(15)
    model, twin, unclipped = make_model(), make_model(), make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    for batch in data:
        opt.zero_grad()
        loss_of(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.05)
        opt.step()
    engine_run(
        twin,
        data,
        lr=0.05,
        prepare=lambda: torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm=0.05),
    )
    assert_same(model, twin)
    engine_run(unclipped, data, lr=0.05)
    assert not torch.equal(next(model.parameters()), next(unclipped.parameters()))


def test_missing_gradients_leave_the_parameter_alone_and_gradless_groups_are_skipped() -> None:
    data = batches(15)
    runs = []
    for set_to_none in (True, False):
        model = make_model()
        unused = torch.nn.Parameter(torch.ones(4))  # never receives a gradient
        frozen_group = torch.nn.Parameter(torch.full((3,), 2.0))
        opt = mt.MLBFGS(
            [{"params": [*model.parameters(), unused]}, {"params": [frozen_group]}],
            lr=0.05,
            weight_decay=0.1,
            **HYPER,
        )
        for batch in data:
            opt.zero_grad(set_to_none=set_to_none)
            loss_of(model, batch).backward()
            opt.step()
        runs.append((model, unused, opt))
        # The group where no parameter ever had a gradient did not change or count steps.
        assert torch.equal(frozen_group.detach(), torch.full((3,), 2.0))
        # (zero_grad(set_to_none=False) leaves a None gradient None.)
        assert opt.engines[1].step_count == 0 and frozen_group.grad is None
    (m1, u1, o1), (m2, u2, o2) = runs
    assert_same(m1, m2)
    # As in torch.optim, a parameter without a gradient does not move: no weight decay,
    # heavy ball or preconditioned step, although its block's other parameters step.
    assert torch.equal(u1.detach(), torch.ones(4)) and torch.equal(u2.detach(), torch.ones(4))
    assert o1.engines[0].step_count == o2.engines[0].step_count == len(data)


@pytest.mark.parametrize("h0", ["gamma", "adam"])
@pytest.mark.parametrize("target", DEVICES)
def test_state_dict_resume_is_exact_and_moves_devices(target: str, h0: str) -> None:
    data = batches(24)
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.1, h0=h0, **HYPER)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(data))
    train(model, opt, data[:12], hook=sched.step)

    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer
    )
    train(model, opt, data[12:], hook=sched.step)  # the run that never stopped

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True, map_location="cpu")
    resumed = make_model(seed=5).to(target)
    resumed.load_state_dict(saved["model"])
    opt2 = mt.MLBFGS(resumed.parameters(), lr=0.1, h0=h0, **HYPER)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=len(data))
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert all(
        value.device.type == target
        for entries in opt2.state.values()
        for value in entries.values()
        if isinstance(value, torch.Tensor)
    )
    train(resumed, opt2, data[12:], hook=sched2.step)
    if target == "cpu":
        assert_same(model, resumed)
    else:  # another device's kernels round differently; the state itself moved exactly
        for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
            torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=1e-4, atol=1e-5)


def test_float32_state_stays_float32() -> None:
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    train(model, opt, batches(10))
    params = list(model.parameters())
    state = opt.state_dict()["state"]
    assert set(state) == set(range(len(params)))  # every parameter has state
    for index, entries in state.items():
        for key, value in entries.items():
            if not isinstance(value, torch.Tensor):
                continue
            assert value.dtype == torch.float32, key
            if key == "block.history.pairs":  # (2M, n) for the block's n entries
                assert value.shape[0] == 2 * HYPER["history_size"], key
            else:  # the parameter's own slice of a block vector
                assert value.shape == params[index].shape, key
    # The float64 Gram matrices are lists, which load_state_dict does not cast.
    assert isinstance(state[0]["block.history.s_dot_y"], list)
    assert {"momentum_buffer", "averages.theta", "block.history.pairs"} <= state[0].keys()


def test_closure_is_called_with_grad_enabled_and_its_loss_returned() -> None:
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    batch = batches(1)[0]
    calls = []

    def closure() -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        return loss

    before = next(model.parameters()).detach().clone()
    loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor)
    assert not torch.equal(before, next(model.parameters()))


def test_torch_cnn_example_learns_digits() -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "torch_cnn.py"
    result = subprocess.run(
        [sys.executable, str(script)],  # the default 12 epochs: about 1.5 s of training
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    accuracy = re.search(r"test accuracy ([0-9.]+)", result.stdout)
    assert accuracy is not None, result.stdout
    assert float(accuracy.group(1)) > 0.9  # measured 0.972 (seed 0); chance is 0.1


def test_group_hyperparameters_are_read_every_step_and_groups_can_be_added() -> None:
    model = make_model()
    opt = mt.MLBFGS(model[0].parameters(), lr=0.05, **HYPER)
    data = batches(6)
    train(model, opt, data[:3])
    opt.param_groups[0]["momentum"] = 0.0  # e.g. OneCycleLR(cycle_momentum=True) does this
    opt.add_param_group({"params": list(model[2].parameters()), "lr": 0.01})
    before = [p.detach().clone() for p in model[2].parameters()]
    train(model, opt, data[3:])
    assert opt.engines[0].config.momentum == 0.0 and opt.engines[0].step_count == 6
    assert opt.engines[1].step_count == 3 and opt.engines[1].lr == 0.01
    assert not any(torch.equal(p, q) for p, q in zip(model[2].parameters(), before, strict=True))
    with pytest.raises(ValueError, match="tau0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "tau0": 2.0})
    assert len(opt.param_groups) == len(opt.engines) == 2
