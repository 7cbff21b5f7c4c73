"""The communicator interface the optimizer needs, and its single-process implementation.

The optimizer never calls MPI or torch.distributed directly: it asks its communicator
for its rank and world size and for the few collectives a step needs. With one process
every collective is the identity, so the same code path serves one process and many.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Communicator(Protocol):
    """What the optimizer needs from a process group."""

    @property
    def rank(self) -> int: ...

    @property
    def size(self) -> int: ...


class SingleProcessComm:
    """The default: one process owns every block; collectives are no-ops."""

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1
