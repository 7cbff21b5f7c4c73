"""``mlbfgs.torch.MLBFGS`` guarantees checked against an independent path: missing
gradients are zeros (the engine fed explicit zeros), and a failed load rolls back every
group it had already loaded."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch_cases import HYPER, batches, loss_of, make_model, train  # noqa: E402

import mlbfgs  # noqa: E402
import mlbfgs.torch as mt  # noqa: E402


def test_missing_gradient_is_exactly_zero_and_its_parameter_stays() -> None:
    """An unused parameter, with weight decay, in a block with used ones: it does not move
    (as in torch.optim), and the rest of its block moves exactly as the engine does when
    fed an explicit zero gradient for it and the parameter is put back after each step (a
    fill other than zero changes the trajectory). Alone in its block without weight decay,
    it does not move either."""
    data = batches(12)
    model, twin = make_model(), make_model()
    unused, twin_unused = (torch.nn.Parameter(torch.linspace(1.0, 2.0, 4)) for _ in range(2))
    alone = torch.nn.Parameter(torch.zeros(3))  # at 0 any non-zero step is visible
    opt = mt.MLBFGS(
        [
            {"params": [*model.parameters(), unused], "weight_decay": 0.1},
            {"params": [alone, torch.nn.Parameter(torch.ones(2))], "blocks": [[0], [1]]},
        ],
        lr=0.05,
        **HYPER,
    )
    params = [*twin.parameters(), twin_unused]
    engine = mlbfgs.MLBFGS([p.detach() for p in params], lr=0.05, weight_decay=0.1, **HYPER)
    for batch in data:
        opt.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        opt.param_groups[1]["params"][1].grad = torch.ones(2)  # the group takes steps
        opt.step()
        twin.zero_grad(set_to_none=True)
        loss_of(twin, batch).backward()
        grads = [p.grad for p in twin.parameters()] + [torch.zeros(4)]
        engine.step(grads)
        with torch.no_grad():
            twin_unused.copy_(torch.linspace(1.0, 2.0, 4))
    for p, q in zip([*model.parameters(), unused], params, strict=True):
        assert torch.equal(p.detach(), q.detach())
    assert torch.equal(unused.detach(), torch.linspace(1.0, 2.0, 4))  # it did not move
    assert not torch.equal(next(model.parameters()).detach(), next(make_model().parameters()))
    assert torch.equal(alone.detach(), torch.zeros(3))
    assert opt.engines[1].step_count == len(data)


def two_group_optimizer(model: torch.nn.Module) -> Any:
    return mt.MLBFGS(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.02}],
        lr=0.05,
        **HYPER,
    )


def engine_states(opt: Any) -> list[dict[str, Any]]:
    return [engine.state_dict() for engine in opt.engines]


def same(a: Any, b: Any) -> bool:
    """Bitwise for tensors; for scalars equal, or both NaN (``stats.mu`` before a pair)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return bool(a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


def assert_same_states(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key, value in x.items():
            assert same(value, y[key]), key


@pytest.mark.parametrize("fault", ["second engine", "torch state"])
def test_failed_load_rolls_back_groups_already_loaded(fault: str) -> None:
    model = make_model()
    opt = two_group_optimizer(model)
    train(model, opt, batches(6))
    other_model = make_model(seed=3)
    other = two_group_optimizer(other_model)
    train(other_model, other, batches(3))
    saved = other.state_dict()
    if fault == "second engine":  # group 0 loads, group 1 fails
        first = saved["param_groups"][1]["params"][0]  # its block's state sits there
        entries = dict(saved["state"][first])
        entries["block.history.pairs"] = entries["block.history.pairs"][:-1]
        saved["state"] = {**saved["state"], first: entries}
        error, match = ValueError, "history.pairs"
    else:  # both engines load, then torch's own load_state_dict fails
        groups = [dict(group) for group in saved["param_groups"]]
        groups[1]["params"] = groups[1]["params"][:1]
        saved["param_groups"] = groups
        error, match = ValueError, "size"
    before = engine_states(opt)
    assert before[0]["step"] != saved["state"][0]["group.step"]  # a load would show
    with pytest.raises(error, match=match):
        opt.load_state_dict(saved)
    assert_same_states(before, engine_states(opt))
    opt.load_state_dict(other.state_dict())  # and the unspoilt state does load
    assert_same_states(engine_states(other), engine_states(opt))


def test_comm_reaches_every_group_and_each_makes_two_collectives() -> None:
    """Two param groups on 2 ranks (threads, tests/support/thread_world.py): bitwise the
    one-process optimizer with the same blocks, and per step one reduce-scatter and one
    all-gather per group (docs/backends.md, Distributed)."""
    from collections import Counter

    from thread_world import ThreadComm, run_world

    data = batches(8)
    models = [make_model() for _ in range(3)]  # torch's RNG is global: not in threads

    def body(comm: ThreadComm | None, blocks: list[Any]) -> tuple[Any, ...]:
        model = models[comm.rank if comm is not None else 2]
        groups = [
            {"params": list(model[0].parameters()), "blocks": blocks[0]},
            {"params": list(model[2].parameters()), "blocks": blocks[1], "lr": 0.02},
        ]
        opt = mt.MLBFGS(groups, lr=0.05, comm=comm, **HYPER)
        calls = []
        for batch in data:
            before = Counter(comm.calls) if comm is not None else Counter()
            opt.zero_grad()
            loss_of(model, batch).backward()
            opt.step()
            calls.append((comm.calls if comm is not None else Counter()) - before)
        partition = [[list(layout.pieces) for layout in e.layouts] for e in opt.engines]
        return model, calls, partition

    results = run_world(2, lambda comm: body(comm, [None, None]))
    partition = results[0][2]
    assert [len(blocks) for blocks in partition] == [2, 2]  # one block per rank in each group
    single, _, _ = body(None, partition)
    for model, calls, _ in results:
        assert calls == [Counter({"reduce_scatter": 2, "allgatherv": 2})] * len(data)
        for p, q in zip(model.parameters(), single.parameters(), strict=True):
            assert torch.equal(p.detach(), q.detach())


def test_lr_may_be_a_one_element_tensor() -> None:
    data = batches(5)
    model, twin = make_model(), make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    opt.param_groups[0]["lr"] = torch.tensor(0.05)  # as some schedulers store it
    train(model, opt, data)
    train(twin, mt.MLBFGS(twin.parameters(), lr=0.05, **HYPER), data)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    opt.param_groups[0]["lr"] = torch.tensor([0.05, 0.1])
    with pytest.raises(ValueError, match=r"param_groups\[0\]: lr must be a number, got a tensor"):
        opt.step()
