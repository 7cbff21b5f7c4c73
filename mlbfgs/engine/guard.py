"""One call at a time: ``step``, ``prepare``, ``apply`` and the state methods of an optimizer.

An optimizer is not thread-safe: two ``step`` calls at once interleave their updates of
the curvature history (slots taken twice, an order that later steps cannot follow), which
corrupts it for good. A non-blocking lock turns that into an immediate, clear error in
the second caller, before it changes anything; the first call finishes undisturbed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class ConcurrentUseError(RuntimeError):
    """Raised when an optimizer is used from a second thread while a call is running."""


class Guard:
    """A re-entrant lock that is never waited for (copies get a fresh, free one)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def __reduce__(self) -> tuple[type[Guard], tuple[()]]:
        return Guard, ()


def exclusive(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Run ``method`` holding ``self._guard`` (created on first use if the object has none);
    raise at once if another thread holds it.

    The same thread may nest guarded calls (``step`` calls ``prepare`` and ``apply``).
    """

    @functools.wraps(method)
    def guarded(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            lock = self._guard.lock
        except AttributeError:  # built without one (or copied without it): one now
            lock = self.__dict__.setdefault("_guard", Guard()).lock
        if not lock.acquire(False):
            raise ConcurrentUseError(
                f"{type(self).__name__}.{method.__name__}() was called while another thread is "
                "inside step(), prepare(), apply(), state_dict() or load_state_dict() of the "
                "same optimizer; nothing was changed (an optimizer serves one thread at a time)"
            )
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    return guarded
