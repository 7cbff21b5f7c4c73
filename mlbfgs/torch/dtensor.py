"""DTensor parameters (FSDP2's ``fully_shard``, HSDP, tensor parallelism) in ``mlbfgs.torch``.

The curvature blocks of a param group of DTensors are each rank's own local shards
(``p.to_local()``, ``p.grad.to_local()``), run by an engine built with ``sharded=True``
(``mlbfgs/engine/shards.py``). That costs nothing beyond what FSDP already does: FSDP
reduce-scatters the gradients and all-gathers the parameters, the optimizer moves no
vector of the model, and each rank keeps only its shards' history. Blocks never mix, so
the result is that of one process whose blocks are every rank's shards in rank order;
only ``step_norm="unit"`` and ``on_nonfinite="raise"`` talk to the other ranks, over the
process group of the mesh dimensions that shard the parameters (docs/distributed.md).

What a group must look like, else one error naming the parameter and what to do:
every parameter a DTensor on one device mesh, each mesh dimension ``Shard`` or
``Replicate`` (no ``Partial``), and the same mesh dimensions sharding every parameter
(tensor parallelism's replicated biases go in a param group of their own); ``blocks``
``None`` (one block of this rank's shards), ``k`` or lists of parameter indices; no
``comm`` (the mesh's group is used).

``optimizer.state`` of such a group, so that ``torch.distributed.checkpoint`` saves every
rank's part and loads it back exactly: each parameter's vectors (``averages.*``,
``momentum_buffer``, ``second_moment``) are DTensors placed like the parameter, and its
columns of its block's ``history.pairs`` a DTensor of shape ``(2M, *p.shape)`` sharded
like it; all of them always (zeros where absent), because DCP loads only the keys of
the state it loads into, which a fresh optimizer lays out. The rest, small and different
on every rank (partition, Gram matrices, slot order, counters, which vectors are
present), is JSON under ``"shards"`` of the group's first parameter, merged over the
ranks by ``state_dict()``, which is therefore a collective. A state saved on another
sharding (another number of ranks) is refused on load: a rank's curvature pairs
describe its own shards only, so they cannot be resharded.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..comm import Communicator, SingleProcessComm
from ..engine import MLBFGS
from ..engine.state import VECTORS
from .state import BLOCK, GROUP, PRESENT, param_state, vector_names

SHARDS = "shards"
_RESHARD = (
    "mL-BFGS's curvature blocks are each rank's own shards and their pairs describe those "
    "shards only, so the state cannot be resharded; resume with the sharding it was saved "
    "with, or start a fresh optimizer from the model's checkpoint"
)


def is_dtensor(p: object) -> bool:
    """Whether ``p`` is a DTensor (without importing ``torch.distributed.tensor``: no
    DTensor exists unless something imported it)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(p, module.DTensor)


@dataclass(frozen=True)
class Sharding:
    """How one param group's DTensors are spread over the ranks."""

    comm: Communicator
    """The ranks whose shards differ (the mesh dimensions that shard the parameters)."""


def sharding_of(
    params: Sequence[torch.Tensor], group: int, comm: object, blocks: object
) -> Sharding | None:
    """``None`` for a group of plain tensors; else check the group's DTensors (raising one
    error that names the parameter and what to do) and find their shard group."""
    kinds = [is_dtensor(p) for p in params]
    if not any(kinds):
        return None
    where = f"param_groups[{group}] param"
    for i, (p, kind) in enumerate(zip(params, kinds, strict=True)):
        if not kind:
            raise TypeError(
                f"{where} {i} (shape {tuple(p.shape)}) is a plain tensor in a group of DTensors: "
                "apply fully_shard to the module that holds it too (or to the root), or give it "
                "a param group of its own"
            )
    if comm is not None:
        raise ValueError(
            f"{where} 0 is a DTensor (FSDP2 or tensor parallelism): build MLBFGS without comm=; "
            "its blocks are this rank's shards and it talks over the parameters' device mesh"
        )
    if isinstance(blocks, Sequence) and any(
        isinstance(item, Sequence)
        for block in blocks
        if isinstance(block, Sequence)
        for item in block
    ):
        raise ValueError(
            f"param_groups[{group}]: with DTensor parameters, blocks are lists of parameter "
            "indices (of this rank's shards), not element ranges"
        )
    from torch.distributed.tensor import Replicate, Shard

    mesh, dims = params[0].device_mesh, None  # type: ignore[attr-defined]
    for i, p in enumerate(params):
        placements = p.placements  # type: ignore[attr-defined]
        if p.device_mesh != mesh:  # type: ignore[attr-defined]
            raise ValueError(
                f"{where} {i} lives on another device mesh than param 0: give each mesh's "
                "parameters a param group of their own"
            )
        odd = [pl for pl in placements if type(pl) not in (Shard, Replicate)]
        if odd:
            raise ValueError(
                f"{where} {i} (shape {tuple(p.shape)}) has placement {odd[0]}: mL-BFGS takes "
                "Shard and Replicate placements (redistribute the parameter first)"
            )
        mine = tuple(d for d, pl in enumerate(placements) if isinstance(pl, Shard))
        if dims is not None and mine != dims:
            raise ValueError(
                f"{where} {i} is sharded over mesh dims {list(mine)}, param 0 over {list(dims)}: "
                "a block must not mix them (each rank would update a replicated one "
                "differently); give parameters of each placement a param group of their own"
            )
        dims = mine
    return Sharding(_shard_comm(mesh, dims or (), where))


def _shard_comm(mesh: Any, dims: tuple[int, ...], where: str) -> Communicator:
    """The process group over the mesh dimensions ``dims``, in mesh order."""
    import torch.distributed as dist

    from ..comm import TorchComm

    if not dims:  # replicated everywhere: every rank computes the same step
        return SingleProcessComm()
    if len(dims) == 1:
        return TorchComm(mesh.get_group(dims[0]), exit_on_exception=False)
    ranks = mesh.mesh.flatten().tolist()
    if len(dims) == mesh.ndim and ranks == list(range(dist.get_world_size())):
        return TorchComm(None, exit_on_exception=False)
    raise ValueError(
        f"{where} 0 is sharded over mesh dims {list(dims)} of a mesh that is not the whole "
        "world in rank order: not supported; shard the parameters over one mesh dimension"
    )


def build_engine(params: Sequence[torch.Tensor], sharding: Sharding, **options: Any) -> MLBFGS:
    """The engine of a group of DTensors: blocks of this rank's shards."""
    return MLBFGS(
        local_views(params), comm=sharding.comm, sharded=True, average_grads=False, **options
    )


def local_views(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each DTensor's local shard (written in place by the step)."""
    return [p.detach().to_local() for p in params]  # type: ignore[attr-defined]


def local_grad(p: torch.Tensor, group: int, index: int) -> torch.Tensor:
    """This rank's shard of ``p``'s gradient, placed like ``p``."""
    grad: Any = p.grad
    if not is_dtensor(grad):
        raise TypeError(
            f"param_groups[{group}] param {index} is a DTensor but its grad is a plain tensor "
            f"of shape {tuple(grad.shape)}: assign gradients as DTensors placed like the parameter"
        )
    placements = p.placements  # type: ignore[attr-defined]
    if grad.placements != placements:  # e.g. Partial: reduce it to the parameter's placement
        grad = grad.redistribute(p.device_mesh, placements)  # type: ignore[attr-defined]
    return grad.to_local().detach()


def _wrap(local: torch.Tensor, p: Any, lead: tuple[int, ...] = ()) -> Any:
    """``local`` as the DTensor it is a shard of: placed like ``p``, with ``lead`` extra
    leading dimensions (which no placement shards)."""
    from torch.distributed.tensor import DTensor, Shard

    placements = [Shard(pl.dim + len(lead)) if isinstance(pl, Shard) else pl for pl in p.placements]
    shape = (*lead, *p.shape)
    stride = tuple(math.prod(shape[k + 1 :]) for k in range(len(shape)))
    return DTensor.from_local(
        local, p.device_mesh, placements, run_check=False, shape=torch.Size(shape), stride=stride
    )


def sharded_param_state(
    engine: MLBFGS, sharding: Sharding, params: Sequence[torch.Tensor], flat: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per parameter of the group, its state (layout in the module docstring)."""
    local = param_state(engine, flat)  # with placeholders of absent vectors
    names = vector_names(engine)
    state: list[dict[str, Any]] = [{} for _ in params]
    blocks = {}
    for b, layout in enumerate(engine.layouts):
        head = local[layout.pieces[0][0]]
        small = {k[len(BLOCK) :]: v for k, v in head.items() if k.startswith(BLOCK)}
        pairs = small.pop("history.pairs")
        small["vectors"] = [VECTORS[k] for k in small.pop(PRESENT)]
        blocks[str(b)] = small
        offset, rows = 0, int(pairs.shape[0])
        for (i, start, stop), shape in zip(layout.pieces, layout.shapes, strict=True):
            columns = pairs[:, offset : offset + stop - start].reshape(rows, *shape)
            state[i]["history.pairs"] = _wrap(columns, params[i], (rows,))
            for name in names:
                state[i][name] = _wrap(local[i][name], params[i])
            offset += stop - start
    mine = {
        "partition": local[0][GROUP + "partition"],
        "shapes": [list(p.shape) for p in engine.params],
        "blocks": blocks,
    }
    state[0][GROUP + "step"] = int(flat["step"])
    state[0][SHARDS] = _encode(
        {"ranks": sharding.comm.size, "local": {str(sharding.comm.rank): mine}}
    )
    return state


def _encode(value: object) -> bytes:
    """JSON as bytes: torch's ``load_state_dict`` rebuilds a ``str`` from a generator (it
    casts every iterable element-wise), but bytes survive, and so do floats (repr is exact)."""
    return json.dumps(value).encode()


def merge_shards(sharding: Sharding, text: bytes) -> bytes:
    """Every rank's ``"shards"`` JSON merged (a collective), the same bytes on every rank."""
    merged: dict[str, Any] = {}
    for part in sharding.comm.allgather_object(text):
        saved = json.loads(part)
        merged.setdefault("ranks", saved["ranks"])
        merged.setdefault("local", {}).update(saved["local"])
    merged["local"] = dict(sorted(merged["local"].items(), key=lambda kv: int(kv[0])))
    return _encode(merged)


def local_entries(
    engine: MLBFGS, sharding: Sharding, entries: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The loaded state of a group of DTensors in the layout of ``mlbfgs.torch.state``
    for this rank's engine; refuses a state of another sharding."""
    first = entries[0]
    if SHARDS not in first:
        raise KeyError(
            f"{SHARDS!r} (the group's first parameter has no mL-BFGS state of sharded "
            "parameters: was it saved from plain tensors?)"
        )
    try:
        saved = json.loads(bytes(first[SHARDS]))
    except (TypeError, ValueError):
        raise ValueError(f"state {SHARDS!r} is not mlbfgs's JSON: {first[SHARDS]!r:.200}") from None
    mine = saved["local"].get(str(sharding.comm.rank))
    shapes = [list(p.shape) for p in engine.params]
    if saved["ranks"] != sharding.comm.size or mine is None or mine["shapes"] != shapes:
        raise ValueError(
            f"the state was saved with its parameters sharded over {saved['ranks']} rank(s), "
            f"this optimizer's are sharded over {sharding.comm.size} (this rank's shards "
            f"{shapes}, saved {None if mine is None else mine['shapes']}): {_RESHARD}"
        )
    state: list[dict[str, Any]] = [{} for _ in entries]
    state[0][GROUP + "step"] = first[GROUP + "step"]
    state[0][GROUP + "partition"] = mine["partition"]
    for b, pieces in enumerate(mine["partition"]):
        small = dict(mine["blocks"][str(b)])
        head = state[pieces[0][0]]
        columns = []
        for i, _, _ in pieces:
            rows = 2 * engine.config.history_size
            expected = (rows, *shapes[i])
            columns.append(_local(entries[i], "history.pairs", expected).reshape(rows, -1))
            for name in small["vectors"]:
                state[i][name] = _local(entries[i], name, tuple(shapes[i]))
        head[BLOCK + "history.pairs"] = torch.cat(columns, dim=1)
        del small["vectors"]
        head.update({BLOCK + key: value for key, value in small.items()})
    return state


def _local(entries: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """This rank's shard of a loaded DTensor entry, of the shape the engine needs."""
    value = entries[name]
    if not is_dtensor(value):
        raise TypeError(
            f"state {name!r} is a {type(value).__name__}, not a DTensor: load a sharded state "
            "dict (get_optimizer_state_dict without full_state_dict=True)"
        )
    local = value.to_local()
    if tuple(local.shape) != shape:
        raise ValueError(f"state {name!r} has local shape {tuple(local.shape)}, expected {shape}")
    return local
