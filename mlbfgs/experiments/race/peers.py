"""The race's optimizers: a label, a kind, the published default lr and options.

Every optimizer runs with weight decay 0 (the race measures how fast each one minimises
the training objective, not regularisation); each constructor is given it explicitly,
since AdamW's, SOAP's and Muon's own defaults are not 0. A new mL-BFGS variant is one
entry: ``mlbfgs_variant(label, options)`` appended to ``PEERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..convergence.tasks import Problem

WEIGHT_DECAY = 0.0
MUON_ADAMW_RATIO = 3e-4 / 0.02
"""Muon's authors' AdamW lr over their Muon lr (``MuonWithAuxAdam``: 3e-4 and 0.02)."""


def hidden_matrices(problem: Problem) -> list[torch.Tensor]:
    """The weights of the model's ``nn.Linear`` layers but the last (the output head or
    classifier). Embeddings, convolutions (4-D), biases and gains (1-D) are never
    ``nn.Linear`` weights; a problem without a ``model`` (the quadratics) has none."""
    model = getattr(problem, "model", None)
    if not isinstance(model, nn.Module):
        return []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [m.weight for m in linears[:-1]]


class MuonWithAdamW:
    """torch.optim.Muon on the hidden weight matrices and torch.optim.AdamW (betas 0.9,
    0.95) on everything else, as Muon's authors prescribe, seen as one optimizer.

    The AdamW group carries ``lr_ratio`` = 3e-4 / 0.02: the training loop sets its lr to
    that multiple of the scheduled lr, so one tuned lr drives both. A problem without
    hidden matrices (logistic regression, the quadratics) is trained by the AdamW part
    alone.
    """

    def __init__(self, problem: Problem, lr: float) -> None:
        hidden = hidden_matrices(problem)
        chosen = {id(p) for p in hidden}
        rest = [p for p in problem.params if id(p) not in chosen]
        self.optimizers: list[torch.optim.Optimizer] = []
        if hidden:
            self.optimizers.append(torch.optim.Muon(hidden, lr=lr, weight_decay=WEIGHT_DECAY))
        if rest:
            group = {"params": rest, "lr_ratio": MUON_ADAMW_RATIO}
            self.optimizers.append(
                torch.optim.AdamW(
                    [group], lr=lr * MUON_ADAMW_RATIO, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY
                )
            )
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none)


def _mlbfgs(problem: Problem, lr: float, options: dict[str, Any]) -> Any:
    from ...torch import MLBFGS

    return MLBFGS(problem.params, lr=lr, weight_decay=WEIGHT_DECAY, **options)


def _mlbfgs_per_tensor(problem: Problem, lr: float, options: dict[str, Any]) -> Any:
    """mL-BFGS with one curvature block per parameter tensor (``blocks=k`` whole-tensor
    blocks with k the number of tensors): the block-diagonal Hessian at layer granularity."""
    return _mlbfgs(problem, lr, {**options, "blocks": len(problem.params)})


def unit_blocks(params: list[torch.Tensor]) -> list[list[tuple[int, int, int]]]:
    """One block per unit: each row of a 2-D weight, with its bias entry when the next
    parameter is that layer's bias (same length as the rows); every other tensor (a
    convolution, an embedding's gain, a lone bias) is one block of its own."""
    blocks: list[list[tuple[int, int, int]]] = []
    biases: set[int] = set()
    for i, p in enumerate(params):
        if i in biases:
            continue
        if p.dim() != 2:
            blocks.append([(i, 0, p.numel())])
            continue
        rows, fan_in = p.shape
        bias = i + 1 if i + 1 < len(params) and params[i + 1].shape == (rows,) else None
        for r in range(rows):
            row = [(i, r * fan_in, (r + 1) * fan_in)]
            blocks.append(row if bias is None else [*row, (bias, r, r + 1)])
        if bias is not None:
            biases.add(bias)
    return blocks


def _mlbfgs_per_unit(problem: Problem, lr: float, options: dict[str, Any]) -> Any:
    """mL-BFGS with one curvature block per unit (``unit_blocks``): finer than a tensor,
    and aligned with the layers, where the element-balanced default blocks are not."""
    return _mlbfgs(problem, lr, {**options, "blocks": unit_blocks(problem.params)})


def _pytorch_optimizer(name: str) -> Callable[[Problem, float, dict[str, Any]], Any]:
    def make(problem: Problem, lr: float, options: dict[str, Any]) -> Any:
        from ...extras import require

        cls = getattr(require("pytorch_optimizer", "the race"), name)
        return cls(problem.params, lr=lr, weight_decay=WEIGHT_DECAY, **options)

    return make


def _torch(cls: Callable[..., Any]) -> Callable[[Problem, float, dict[str, Any]], Any]:
    def make(problem: Problem, lr: float, options: dict[str, Any]) -> Any:
        return cls(problem.params, lr=lr, weight_decay=WEIGHT_DECAY, **options)

    return make


FACTORIES: dict[str, Callable[[Problem, float, dict[str, Any]], Any]] = {
    "sgd": _torch(torch.optim.SGD),
    "adamw": _torch(torch.optim.AdamW),
    "nadam": _torch(torch.optim.NAdam),
    "soap": _pytorch_optimizer("SOAP"),
    "scalable_shampoo": _pytorch_optimizer("ScalableShampoo"),
    "shampoo": _pytorch_optimizer("Shampoo"),
    "muon": lambda problem, lr, options: MuonWithAdamW(problem, lr),
    "mlbfgs": _mlbfgs,
    "mlbfgs per tensor": _mlbfgs_per_tensor,
    "mlbfgs per unit": _mlbfgs_per_unit,
}
"""kind -> ``make(problem, lr, options)``."""

NEEDS: dict[str, str] = {
    "soap": "pytorch_optimizer",
    "scalable_shampoo": "pytorch_optimizer",
    "shampoo": "pytorch_optimizer",
}
"""kind -> the optional module it needs (checked before the race starts)."""


@dataclass(frozen=True)
class Peer:
    """An optimizer of the race: ``kind`` picks the constructor, ``options`` are passed
    on, and the lr grid is centred on ``default_lr`` (its published default)."""

    label: str
    kind: str
    default_lr: float
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def make(self, problem: Problem, lr: float) -> Any:
        return FACTORIES[self.kind](problem, lr, self.options)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options.items())
        text = f"{self.label}: {self.kind}" + (f" ({extra})" if extra else "")
        return f"{text}; default lr {self.default_lr:g}" + (f"; {self.note}" if self.note else "")


def mlbfgs_variant(label: str, options: dict[str, Any], default_lr: float = 0.1) -> Peer:
    """An mL-BFGS entry: ``mlbfgs.torch.MLBFGS(params, lr, **options)``."""
    return Peer(label, "mlbfgs", default_lr, options)


PEERS: dict[str, Peer] = {
    peer.label: peer
    for peer in (
        Peer("SGD", "sgd", 0.1, {"momentum": 0.9}, "heavy ball"),
        Peer("AdamW", "adamw", 1e-3, {"betas": (0.9, 0.999)}),
        Peer(
            "NAdamW",
            "nadam",
            1e-3,
            {"betas": (0.9, 0.999), "decoupled_weight_decay": True},
            "torch's NAdam with its momentum_decay schedule (default 4e-3), which "
            "AlgoPerf's own NAdamW class does not have, so the two differ",
        ),
        Peer("SOAP", "soap", 3e-3, {}, "pytorch_optimizer 4.1.0 defaults"),
        # The package's defaults compute the inverse roots every 1000 steps and use the
        # identity before, so on budgets of 400-2000 steps they are Nesterov SGD, and they
        # graft to SGD's step, far from the lr grid's 1e-3. As Distributed Shampoo runs in
        # AlgoPerf: roots every 10 steps (SOAP's default frequency) and grafting to the
        # RMSProp step (graft_type 3, LayerWiseGrafting.RMSPROP), so its lr is Adam's.
        Peer(
            "Shampoo",
            "scalable_shampoo",
            1e-3,
            {"preconditioning_compute_steps": 10, "graft_type": 3},
            "pytorch_optimizer 4.1.0 ScalableShampoo, inverse roots every 10 steps, "
            "RMSProp grafting",
        ),
        Peer(
            "Muon",
            "muon",
            0.02,
            {},
            "torch.optim.Muon on hidden 2-D weights, AdamW (0.9, 0.95) at lr x 3e-4/0.02 "
            "on the rest",
        ),
        mlbfgs_variant("mL-BFGS", {}),
        mlbfgs_variant("mL-BFGS paper", {"preset": "paper"}),
        mlbfgs_variant("mL-BFGS released", {"preset": "released"}),
        # L-BFGS over Adam's step (h0="adam", docs/algorithm.md): lr at Adam's scale.
        mlbfgs_variant("mL-BFGS adam", {"h0": "adam"}, 1e-3),
        # The same step without curvature pairs, which is Adam: what the pairs add.
        mlbfgs_variant("adam no pairs", {"h0": "adam", "warmup": 10**9}, 1e-3),
        mlbfgs_variant("adam T=10", {"h0": "adam", "update_every": 10}, 1e-3),
        # Step control that only shortens (step_norm="trust"): grafting lengthened the
        # paper's shorter steps on the diagonal quadratic and lost its gain (issue 17).
        mlbfgs_variant("mL-BFGS trust", {"step_norm": "trust"}),
        mlbfgs_variant("mL-BFGS adam trust", {"h0": "adam", "step_norm": "trust"}, 1e-3),
        # One block per parameter tensor (issue 17: finer blocks helped in race4).
        Peer("mL-BFGS tensors", "mlbfgs per tensor", 0.1, {}),
        Peer("mL-BFGS adam tensors", "mlbfgs per tensor", 1e-3, {"h0": "adam"}),
        # One block per unit (a weight row and its bias): finer still (issue 17).
        Peer("mL-BFGS units", "mlbfgs per unit", 0.1, {}),
        Peer("mL-BFGS adam units", "mlbfgs per unit", 1e-3, {"h0": "adam"}),
    )
}
"""Every optimizer of the race, by label, in the order of the tables."""

BASELINES = ("AdamW", "NAdamW", "SGD")
"""The optimizers whose best median final metric sets each workload's target."""
