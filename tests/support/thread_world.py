"""A world of p ranks inside one process: one thread per rank, collectives by barrier.

``run_world(p, body)`` calls ``body(comm)`` on p threads, each with its own
:class:`ThreadComm`, and returns their results in rank order. The collectives really
combine the ranks' data (sums, gathers), so a p-rank run can be compared with one process,
and every call is counted per rank, so tests can check how many collectives a step makes.
A rank "killed" with :meth:`ThreadComm.kill` breaks the barrier, so the others stop at
their next collective, as ``mpiexec`` stops a job whose rank died.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mlbfgs.comm import displacements

TIMEOUT = 60.0
"""Seconds a rank waits for the others at a barrier before the world is declared hung."""


class Killed(BaseException):
    """A simulated crash: not an ``Exception``, so nothing in the library catches it."""


class ThreadComm:
    """Rank ``rank`` of a :class:`World`; implements ``mlbfgs.comm.Communicator``."""

    def __init__(self, world: World, rank: int) -> None:
        self.world, self._rank = world, rank
        self.calls: Counter[str] = Counter()

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self.world.size

    def _exchange(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (two barriers: post, then read)."""
        self.world.slots[self._rank] = value
        self.world.barrier.wait()
        everyone = list(self.world.slots)
        self.world.barrier.wait()
        return everyone

    def allgather_object(self, obj: Any) -> list[Any]:
        self.calls["allgather_object"] += 1
        return self._exchange(obj)

    def reduce_scatter(self, send: Any, recv: Any, counts: Sequence[int]) -> None:
        self.calls["reduce_scatter"] += 1
        start = displacements(counts)[self._rank]
        mine = slice(start, start + int(counts[self._rank]))
        everyone = self._exchange(send * 1)  # a copy: the caller may reuse its buffer
        total = everyone[0][mine]
        for other in everyone[1:]:
            total = total + other[mine]
        recv[...] = total

    def allgatherv(self, buffer: Any, counts: Sequence[int]) -> None:
        self.calls["allgatherv"] += 1
        starts = displacements(counts)
        start = starts[self._rank]
        segments = self._exchange(buffer[start : start + int(counts[self._rank])] * 1)
        for r, segment in enumerate(segments):
            buffer[starts[r] : starts[r] + int(counts[r])] = segment

    def kill(self) -> None:
        self.world.barrier.abort()
        raise Killed(f"rank {self._rank}")


class World:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=TIMEOUT)
        self.slots: list[Any] = [None] * size


def run_world(
    size: int, body: Callable[[ThreadComm], Any], return_errors: bool = False
) -> list[Any]:
    """``body(comm)`` on every rank of a fresh world; re-raises the first rank's error, or
    with ``return_errors`` returns it in that rank's place."""
    world = World(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def rank_main(rank: int) -> None:
        try:
            results[rank] = body(ThreadComm(world, rank))
        except BaseException as error:  # reported below, on the caller's thread
            errors[rank] = error
            # A failure the caller will re-raise frees the other ranks at once. Where
            # errors are results, a rank that has just passed a barrier must not find it
            # broken (a race), so a lone failure there waits out TIMEOUT instead.
            if not return_errors:
                world.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert not any(thread.is_alive() for thread in threads), "a thread rank hung"
    if return_errors:
        return [e if e is not None else r for e, r in zip(errors, results, strict=True)]
    first = next((e for e in errors if e is not None and not _broken(e)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


def _broken(error: BaseException) -> bool:
    return isinstance(error, threading.BrokenBarrierError)
