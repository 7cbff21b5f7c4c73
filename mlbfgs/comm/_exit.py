"""End the whole job when one rank dies of an uncaught exception, instead of a hang.

A rank that raises outside a collective leaves the others waiting in the next one, for
ever (MPI) or until a timeout (NCCL). ``python -m mpi4py script.py`` avoids that by
aborting on an uncaught exception; the communicators install the same behaviour for
plain ``python script.py``: the traceback is printed as usual, then the job ends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

_installed: list[str] = []


def end_job_on_uncaught_exception(name: str, end: Callable[[], None]) -> bool:
    """Chain ``sys.excepthook``: print the traceback as before, then call ``end``.

    Installs once per process (the first communicator wins); returns whether it did.
    """
    if _installed:
        return False
    previous = sys.excepthook

    def hook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        try:
            previous(kind, value, traceback)
            print(f"mlbfgs: uncaught exception on this rank; {name}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            end()

    sys.excepthook = hook
    _installed.append(name)
    return True
