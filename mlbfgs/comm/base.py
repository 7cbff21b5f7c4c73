"""The communicator interface the optimizer needs, and its single-process implementation.

The optimizer never calls MPI or torch.distributed directly: it asks its communicator
for its rank and world size and for the few collectives a step needs. With one process
every collective is the identity, so the same code path serves one process and many.

Buffers handed to the collectives are flat, contiguous 1-d arrays of the optimizer's
array library (NumPy, torch, CuPy). ``counts[r]`` is the number of elements rank ``r``
contributes or receives; ranks hold consecutive segments of the flat vector, in rank
order, so rank ``r``'s segment starts at ``sum(counts[:r])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..core.types import Array


@runtime_checkable
class Communicator(Protocol):
    """What the optimizer needs from a process group."""

    @property
    def rank(self) -> int: ...

    @property
    def size(self) -> int: ...

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (small, picklable), in rank order: set-up checks only."""
        ...

    def reduce_scatter(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        """``recv <-`` the element-wise sum over ranks of this rank's segment of ``send``."""
        ...

    def allgatherv(self, buffer: Array, counts: Sequence[int]) -> None:
        """In place: fill every rank's segment of ``buffer`` from the rank that holds it."""
        ...


def displacements(counts: Sequence[int]) -> list[int]:
    """Where each rank's segment starts in the flat vector."""
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += int(count)
    return starts


class SingleProcessComm:
    """The default: one process owns every block; collectives are no-ops."""

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def reduce_scatter(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        recv[...] = send[: int(counts[0])]

    def allgatherv(self, buffer: Array, counts: Sequence[int]) -> None:
        return None
