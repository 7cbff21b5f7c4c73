"""Runs on worker processes, for the convergence suite and the optimizer race.

Each run is deterministic given its key, so the results do not depend on the number of
processes, only the wall-clock time does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Key = TypeVar("Key")
Result = TypeVar("Result")


def execute(
    worker: Callable[[Key], Result],
    keys: Sequence[Key],
    jobs: int,
    progress: Callable[[int], None],
) -> list[Result]:
    """``[worker(key) for key in keys]`` on ``jobs`` processes (in this one if ``jobs <= 1``);
    ``progress(1)`` after each run, in the order of ``keys``."""
    if jobs <= 1:
        results = []
        for key in keys:
            results.append(worker(key))
            progress(1)
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(worker, key) for key in keys]
        for future in futures:
            future.result()
            progress(1)
        return [future.result() for future in futures]
