"""The distributed plumbing of ``MLBFGS.step``: which blocks are mine, and how data moves.

Every step costs at most two collectives, whatever the number of blocks or tensors
(docs/design.md section 5): with ``average_grads`` one reduce-scatter leaves each rank the
mean gradient of its own blocks, and after the update one all-gather writes every
block's new parameters into every rank's parameters. Both work on one flat vector that
holds the blocks in block order, so a rank's contiguous run of blocks is one segment.
With one process nothing is communicated and no flat buffer is allocated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, TypeVar

from array_api_compat import device

from ..comm import Communicator
from ..core.config import MLBFGSConfig
from ..core.types import Array, Namespace
from .assignment import assign_blocks, rank_counts
from .layout import BlockLayout

T = TypeVar("T")


class DistributedSetupError(ValueError):
    """Ranks disagree on the optimizer's set-up (raised on every rank, at construction)."""


def together(
    comm: Communicator, action: Callable[[], T], failure: Callable[[str], Exception], what: str
) -> list[T]:
    """Run ``action`` on every rank and gather its results, so that no rank waits for one
    that failed: if it failed anywhere, every rank raises (the failing one its own error,
    the others ``failure("<what> on rank r: <error>")``). One small all-gather; none on one
    process. Construction and checkpoints both decide this way."""
    error: Exception | None = None
    try:
        result: Any = action()
    except Exception as exc:
        if comm.size == 1:
            raise
        error, result = exc, None
    if comm.size == 1:
        return [result]
    outcome = (error is None, result if error is None else f"{type(error).__name__}: {error}")
    everyone = comm.allgather_object(outcome)
    if error is not None:
        raise error
    failed = [f"rank {r}: {detail}" for r, (ok, detail) in enumerate(everyone) if not ok]
    if failed:
        raise failure(f"{what} on " + "; ".join(failed))
    return [detail for _, detail in everyone]


def construct_together(comm: Communicator, build: Callable[[], dict[str, Any]]) -> None:
    """Run ``build`` (set-up, returning a fingerprint) with :func:`together` and check that
    all ranks agree, so that a failure raises on every rank at construction instead of
    hanging in the first collective of ``step``."""
    everyone = together(comm, build, DistributedSetupError, "MLBFGS failed to set up")
    if comm.size == 1:
        return
    keys = sorted({key for f in everyone for key in f})
    problems = []
    for key in keys:
        values: dict[str, list[int]] = {}
        for r, f in enumerate(everyone):
            values.setdefault(_short(f.get(key, "<missing>")), []).append(r)
        if len(values) > 1:
            groups = ", ".join(f"{value} on ranks {ranks}" for value, ranks in values.items())
            problems.append(f"{key}: {groups}")
    if problems:
        raise DistributedSetupError(
            "ranks disagree on the optimizer set-up (every rank must build MLBFGS with the "
            "same configuration and parameter shapes): " + "; ".join(problems)
        )


def fingerprint(
    config: MLBFGSConfig,
    lr: object,
    settings: Mapping[str, Any],
    xp: Namespace,
    params: Sequence[Array],
    layouts: Sequence[BlockLayout],
) -> dict[str, Any]:
    """What every rank must agree on, for :func:`construct_together` to compare: the
    hyperparameters, ``lr`` (or that it is a callable), the engine's ``settings``, the array
    library and the parameters; with ``settings["sharded"]`` not their shapes or blocks
    (shards, and so their blocks, may differ in shape from rank to rank)."""
    result = {
        **dataclasses.asdict(config),
        "lr": lr if isinstance(lr, float) else "callable",
        **settings,
        "array_library": getattr(xp, "__name__", repr(xp)),
        "parameter_count": len(params),
        "shapes": [tuple(int(d) for d in p.shape) for p in params],
        "dtypes": [str(p.dtype) for p in params],
        "blocks": [list(layout.pieces) for layout in layouts],
    }
    if settings.get("sharded"):
        del result["shapes"], result["blocks"]
    return result


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BlockExchange:
    """The blocks this rank owns and the two collectives of a step.

    ``assignment[r]`` lists the blocks rank ``r`` owns; ``counts[r]`` their elements.
    """

    def __init__(self, comm: Communicator, layouts: Sequence[BlockLayout], params: Sequence[Array]):
        self.comm, self.layouts = comm, list(layouts)
        sizes = [layout.numel for layout in self.layouts]
        self.assignment = assign_blocks(sizes, comm.size)
        self.owned = self.assignment[comm.rank]
        self.counts = rank_counts(sizes, self.assignment)
        self.offsets = [sum(sizes[:b]) for b in range(len(sizes))]
        self.total = sum(sizes)
        self._start = sum(self.counts[: comm.rank])
        if comm.size > 1:
            first = params[0]
            for i, p in enumerate(params):
                if p.dtype != first.dtype or device(p) != device(first):
                    raise ValueError(
                        f"params[{i}] has dtype {p.dtype} on {device(p)}, params[0] {first.dtype} "
                        f"on {device(first)}: distributed MLBFGS exchanges one flat vector, so "
                        "every parameter must share one dtype and device"
                    )
        self._like = params[0]
        self._flat: Array | None = None
        self._local: Array | None = None

    @property
    def distributed(self) -> bool:
        return self.comm.size > 1

    def _buffers(self, xp: Namespace) -> tuple[Array, Array]:
        """The flat vector of all blocks and this rank's segment, allocated once."""
        if self._flat is None or self._local is None:
            dtype, where = self._like.dtype, device(self._like)
            self._flat = xp.empty((self.total,), dtype=dtype, device=where)
            self._local = xp.empty((self.counts[self.comm.rank],), dtype=dtype, device=where)
        return self._flat, self._local

    def gradients(self, xp: Namespace, grads: Sequence[Array], average: bool) -> list[Array]:
        """The (mean, if ``average`` on several ranks) flat gradient of each owned block.

        Changes nothing but this exchange's own buffers.
        """
        if not (average and self.distributed):
            return [self.layouts[b].gather(xp, grads) for b in self.owned]
        flat, local = self._buffers(xp)
        for layout, offset in zip(self.layouts, self.offsets, strict=True):
            layout.gather_into(xp, grads, flat[offset : offset + layout.numel])
        self.comm.reduce_scatter(flat, local, self.counts)
        local /= self.comm.size
        return [self._segment(local, b) for b in self.owned]

    def _segment(self, local: Array, b: int) -> Array:
        start = self.offsets[b] - self._start
        return local[start : start + self.layouts[b].numel]

    def publish(
        self,
        xp: Namespace,
        theta_next: dict[int, Array],
        params: Sequence[Array],
        keep: Container[int] = (),
    ) -> None:
        """Write every block's new parameters into ``params`` on every rank.

        ``theta_next`` holds this rank's owned blocks (a skipped block's current values).
        On one process the parameters in ``keep`` are left as they are.
        """
        if not self.distributed:
            for b, theta in theta_next.items():
                self.layouts[b].scatter(xp, theta, params, keep)
            return
        flat, _ = self._buffers(xp)
        for b in self.owned:
            start = self.offsets[b]
            flat[start : start + self.layouts[b].numel] = theta_next[b]
        self.comm.allgatherv(flat, self.counts)
        for layout, start in zip(self.layouts, self.offsets, strict=True):
            layout.scatter(xp, flat[start : start + layout.numel], params)

    def sum_over_blocks(self, xp: Namespace, values: Mapping[int, Array]) -> Array:
        """The sum of one 0-d value per block over every block of every rank.

        Each rank gives the values of blocks it owns (missing ones count as zero). The
        values are gathered per block (one small all-gather of float64) and summed in block
        order, so the result is bitwise the same on every rank and for every world size.
        """
        vector = xp.zeros((len(self.layouts),), dtype=xp.float64, device=device(self._like))
        for b, value in values.items():
            vector[b] = xp.astype(value, xp.float64)
        if self.distributed:
            self.comm.allgatherv(vector, [len(blocks) for blocks in self.assignment])
        return xp.sum(vector)

    def everyone_bad(self, bad: list[int]) -> list[list[int]]:
        """Each rank's owned blocks with a non-finite gradient: one small collective, for
        ``on_nonfinite='raise'``."""
        if not self.distributed:
            return [list(bad)]
        return [list(found) for found in self.comm.allgather_object(list(bad))]
