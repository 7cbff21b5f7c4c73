"""``mlbfgs.torch.MLBFGS`` on bad input: clear errors that name the culprit, nothing changed."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch_cases import HYPER, batches, loss_of, make_model, train  # noqa: E402

import mlbfgs.torch as mt  # noqa: E402


def test_failed_load_changes_nothing() -> None:
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    train(model, opt, batches(6))
    other = mt.MLBFGS(make_model().parameters(), lr=0.05, **{**HYPER, "history_size": 4})
    train(make_model(), other, batches(3))
    before = opt.engines[0].state_dict()
    groups = [dict(group) for group in opt.param_groups]
    with pytest.raises(ValueError, match="history_size"):
        opt.load_state_dict(other.state_dict())
    with pytest.raises(KeyError, match="is it from mlbfgs.torch.MLBFGS"):
        opt.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())
    assert [dict(group) for group in opt.param_groups] == groups
    after = opt.engines[0].state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        other_value = after[key]
        assert (
            torch.equal(value, other_value)
            if isinstance(value, torch.Tensor)
            else value == other_value
        )


def test_bad_arguments_name_themselves() -> None:
    params = list(make_model().parameters())
    with pytest.raises(ValueError, match="lr"):
        mt.MLBFGS(params, lr=-1.0)
    with pytest.raises(ValueError, match="history_size"):
        mt.MLBFGS(params, history_size=0)
    with pytest.raises(ValueError, match="sigma_high"):
        mt.MLBFGS([{"params": params, "sigma_high": 0.5}])
    opt = mt.MLBFGS(params, lr=0.1, **HYPER)
    for key, value in (("history_size", 7), ("blocks", 2)):
        saved = opt.param_groups[0][key]
        opt.param_groups[0][key] = value
        with pytest.raises(ValueError, match=key):
            opt.step()
        opt.param_groups[0][key] = saved


def test_changing_dtype_after_construction_is_reported() -> None:
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.1, **HYPER)
    model.double()
    loss_of(model, batches(1, torch.float64)[0]).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="moved from torch.float32"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_raise_with_several_groups_changes_no_group() -> None:
    """A NaN in the second group: the first group must not have stepped either."""
    torch.manual_seed(0)
    first, second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    opt = mt.MLBFGS(
        [{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.01}],
        lr=0.05,
        update_every=2,
        on_nonfinite="raise",
    )
    for p in [*first.parameters(), *second.parameters()]:
        p.grad = torch.ones_like(p)
    opt.step()
    before = [p.detach().clone() for p in [*first.parameters(), *second.parameters()]]
    state = [engine.state_dict() for engine in opt.engines]
    second.bias.grad = torch.tensor([float("nan")])
    with pytest.raises(FloatingPointError, match=r"param_groups\[1\]"):
        opt.step()
    for old, p in zip(before, [*first.parameters(), *second.parameters()], strict=True):
        assert torch.equal(old, p.detach())
    for old, new in zip(state, [engine.state_dict() for engine in opt.engines], strict=True):
        assert old["step"] == new["step"] == 1


def test_bad_group_hyperparameter_is_named_and_changes_nothing() -> None:
    model = torch.nn.Linear(2, 1)
    opt = mt.MLBFGS([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.param_groups[0]["momentum"] = 0.5
    opt.param_groups[1]["momentum"] = 1.5
    config_before = opt.engines[0].config
    with pytest.raises(ValueError, match=r"param_groups\[1\]: momentum"):
        opt.step()
    assert opt.engines[0].config is config_before
