"""A world of p ranks inside one process: one thread per rank, collectives by barrier.

``run_world(p, body)`` calls ``body(comm)`` on p threads, each with its own
:class:`ThreadComm`, and returns their results in rank order. The collectives really
combine the ranks' data (sums, gathers), so a p-rank run can be compared with one process,
and every call is counted per rank, so tests can check how many collectives a step makes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mlbfgs.comm import displacements

TIMEOUT = 60.0
"""Seconds a rank waits for the others at a barrier before the world is declared hung."""


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


class World:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=TIMEOUT)
        self.slots: list[Any] = [None] * size


def run_world(size: int, body: Callable[[ThreadComm], Any]) -> list[Any]:
    """``body(comm)`` on every rank of a fresh world; re-raises the first rank's error."""
    world = World(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def rank_main(rank: int) -> None:
        try:
            results[rank] = body(ThreadComm(world, rank))
        except BaseException as error:  # reported below, on the caller's thread
            errors[rank] = error
            world.barrier.abort()  # the other ranks stop waiting instead of hanging

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    first = next((e for e in errors if e is not None and not _broken(e)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


def _broken(error: BaseException) -> bool:
    return isinstance(error, threading.BrokenBarrierError)
