"""Ranks as threads of this process, for in-process tests of distributed code paths.

``ThreadComm`` implements the communicator interface with a barrier and shared slots, so
``MLBFGS`` and the checkpoint functions run unchanged on p "ranks" without launching
anything. A rank "killed" by raising :class:`Killed` breaks the barrier, so the others
stop at their next collective, as ``mpiexec`` stops a job whose rank died.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlbfgs.comm import displacements


class Killed(BaseException):
    """A simulated crash: not an ``Exception``, so nothing in the library catches it."""


class ThreadComm:
    def __init__(self, rank: int, size: int, barrier: threading.Barrier, slots: list[Any]):
        self.rank, self.size, self._barrier, self._slots = rank, size, barrier, slots

    def allgather_object(self, obj: Any) -> list[Any]:
        self._barrier.wait()  # everyone has read the previous round
        self._slots[self.rank] = obj
        self._barrier.wait()
        return list(self._slots)

    def reduce_scatter(self, send: Any, recv: Any, counts: Sequence[int]) -> None:
        total = sum(self.allgather_object(np.array(send, copy=True)))
        start = displacements(counts)[self.rank]
        recv[...] = total[start : start + int(counts[self.rank])]

    def allgatherv(self, buffer: Any, counts: Sequence[int]) -> None:
        starts = displacements(counts)
        mine = np.array(buffer[starts[self.rank] : starts[self.rank] + counts[self.rank]])
        for r, part in enumerate(self.allgather_object(mine)):
            buffer[starts[r] : starts[r] + counts[r]] = part

    def kill(self) -> None:
        self._barrier.abort()
        raise Killed(f"rank {self.rank}")


def run_ranks(size: int, body: Callable[[ThreadComm], Any]) -> list[Any]:
    """Run ``body(comm)`` on ``size`` thread ranks; each result, or the exception it raised."""
    # A rank that raised alone (a bug: ranks must fail together) breaks the barrier for
    # the others after the timeout, instead of a hang.
    barrier, slots = threading.Barrier(size, timeout=20), [None] * size
    results: list[Any] = [None] * size

    def target(rank: int) -> None:
        try:
            results[rank] = body(ThreadComm(rank, size, barrier, slots))
        except BaseException as error:  # collected for the test to assert on
            results[rank] = error

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread rank hung"
    return results
