"""``TorchComm``: the collectives over torch.distributed (NCCL on GPUs, gloo on CPUs).

torch.distributed's single-tensor collectives need equal sizes on every rank, so each
rank's segment is padded to the largest segment: one ``reduce_scatter`` and one
``all_gather`` of ``size * max(counts)`` elements per step. NumPy and CuPy buffers are
viewed as tensors without copies (``torch.from_numpy`` / DLPack).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..core.types import Array
from ._exit import end_job_on_uncaught_exception
from .base import displacements


def _as_tensor(a: Array) -> Any:
    """A tensor sharing memory with ``a``."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.from_dlpack(a)  # pragma: no cover - CuPy, needs a GPU


class TorchComm:
    """Collectives over a torch.distributed process group (the default group if None).

    The process group must already be initialised (``torch.distributed.init_process_group``);
    with NCCL each rank must have selected its GPU (``torch.cuda.set_device``).

    ``exit_on_exception`` (default) makes an uncaught exception on this rank print its
    traceback and then end this process at once (``os._exit(1)``, skipping an interpreter
    teardown that can wait on the process group): the other ranks' pending collectives
    then fail (gloo, at once) or time out (NCCL), and ``torchrun`` stops every worker as
    soon as one exits. Pass ``False`` to keep Python's own handling.
    """

    def __init__(self, group: Any = None, exit_on_exception: bool = True) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "TorchComm needs an initialised process group: call "
                "torch.distributed.init_process_group(...) first"
            )
        if exit_on_exception:
            end_job_on_uncaught_exception("os._exit(1) ends this rank", lambda: os._exit(1))
        self._dist = dist
        self._group = group
        # torch 2.13 renamed the single-tensor collectives; older releases have the old names.
        self._reduce_scatter: Any = getattr(
            dist, "reduce_scatter_single", getattr(dist, "reduce_scatter_tensor", None)
        )
        self._all_gather: Any = getattr(
            dist, "all_gather_single", getattr(dist, "all_gather_into_tensor", None)
        )
        self._padded: dict[tuple[str, int, Any, Any], Any] = {}

    def _buffer(self, role: str, size: int, like: Any) -> Any:
        """A zero-initialised work tensor kept between steps: the padding stays zero,
        since only each rank's first ``count`` entries are ever written."""
        import torch

        key = (role, size, like.dtype, like.device)
        if key not in self._padded:
            self._padded[key] = torch.zeros(size, dtype=like.dtype, device=like.device)
        return self._padded[key]

    @property
    def rank(self) -> int:
        return int(self._dist.get_rank(self._group))

    @property
    def size(self) -> int:
        return int(self._dist.get_world_size(self._group))

    def allgather_object(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.size
        self._dist.all_gather_object(gathered, obj, group=self._group)
        return gathered

    def reduce_scatter(self, send: Array, recv: Array, counts: Sequence[int]) -> None:

        counts = [int(c) for c in counts]
        width, starts = max(counts), displacements(counts)
        flat = _as_tensor(send)
        padded = self._buffer("reduce_scatter.send", self.size * width, flat)
        for r, (start, count) in enumerate(zip(starts, counts, strict=True)):
            padded[r * width : r * width + count] = flat[start : start + count]
        out = self._buffer("reduce_scatter.recv", width, flat)
        self._reduce_scatter(out, padded, group=self._group)
        _as_tensor(recv)[...] = out[: counts[self.rank]]

    def allgatherv(self, buffer: Array, counts: Sequence[int]) -> None:

        counts = [int(c) for c in counts]
        width, starts, rank = max(counts), displacements(counts), self.rank
        flat = _as_tensor(buffer)
        mine = self._buffer("all_gather.send", width, flat)
        mine[: counts[rank]] = flat[starts[rank] : starts[rank] + counts[rank]]
        out = self._buffer("all_gather.recv", self.size * width, flat)
        self._all_gather(out, mine, group=self._group)
        for r, (start, count) in enumerate(zip(starts, counts, strict=True)):
            if r != rank:
                flat[start : start + count] = out[r * width : r * width + count]
