"""A small torch model, data and training loops shared by the torch optimizer tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

import mlbfgs  # noqa: E402

HYPER = {"history_size": 3, "update_every": 2, "momentum": 0.9}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3), torch.nn.Tanh()
    ).to(dtype)


def batches(count: int, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(16, 6, generator=gen, dtype=dtype),
            torch.randn(16, 3, generator=gen, dtype=dtype),
        )
        for _ in range(count)
    ]


def loss_of(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, y = (t.to(next(model.parameters()).device) for t in batch)
    return ((model(x) - y) ** 2).mean()


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: list[tuple[torch.Tensor, ...]],
    hook: Callable[[], None] | None = None,
) -> None:
    for batch in data:
        opt.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        opt.step()
        if hook is not None:
            hook()


def engine_run(
    model: torch.nn.Module,
    data: list[tuple[torch.Tensor, ...]],
    lr: float | Callable[[int], float],
    prepare: Callable[[], None] | None = None,
    **hyper: object,
) -> None:
    """The reference: the array-API engine on the same tensors, fed ``p.grad``."""
    params = list(model.parameters())
    engine = mlbfgs.MLBFGS([p.detach() for p in params], lr=lr, **{**HYPER, **hyper})
    for batch in data:
        model.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        if prepare is not None:
            prepare()
        engine.step([p.grad for p in params])


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p.detach().cpu(), q.detach().cpu())
