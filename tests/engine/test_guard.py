"""``exclusive`` and ``Guard`` (``mlbfgs/engine/guard.py``) on a plain object: a second
thread is refused at once and runs nothing, the same thread may nest guarded calls, the
lock is released after an error, and copies get a lock of their own. The optimizers'
own use of it is tested in ``tests/engine/test_reliability.py``."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest

from mlbfgs.engine.guard import ConcurrentUseError, Guard, exclusive


class Counter:
    def __init__(self) -> None:
        self._guard = Guard()
        self.calls = 0
        self.inside = threading.Event()
        self.release = threading.Event()

    @exclusive
    def hold(self) -> None:
        """Stays inside until released (the test's stand-in for a long ``step``)."""
        self.calls += 1
        self.inside.set()
        assert self.release.wait(20)

    @exclusive
    def add(self, amount: int = 1) -> int:
        self.calls += amount
        return self.calls

    @exclusive
    def nested(self) -> int:
        return self.add(10)  # as step() calls prepare() and apply()

    @exclusive
    def fail(self) -> None:
        raise RuntimeError("inside")


def test_a_second_thread_is_refused_at_once_and_changes_nothing() -> None:
    counter = Counter()
    first = threading.Thread(target=counter.hold)
    first.start()
    assert counter.inside.wait(20)
    try:
        with pytest.raises(ConcurrentUseError, match=r"Counter\.add\(\) was called while"):
            counter.add()
        assert counter.calls == 1  # add's body never ran
    finally:
        counter.release.set()
        first.join(20)
    assert counter.add() == 2  # free again once the first call returned


def test_the_same_thread_may_nest_guarded_calls() -> None:
    assert Counter().nested() == 10


def test_an_error_inside_releases_the_lock() -> None:
    counter = Counter()
    with pytest.raises(RuntimeError, match="inside"):
        counter.fail()
    done = []
    other = threading.Thread(target=lambda: done.append(counter.add()))
    other.start()
    other.join(20)
    assert done == [1]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_guard_copied_while_held_is_free(how: str) -> None:
    """An optimizer copied during a step (EMA, checkpoint tools) must not start locked."""
    guard = Guard()
    assert guard.lock.acquire(False)  # as if a step were running
    try:
        twin = copy.deepcopy(guard) if how == "deepcopy" else pickle.loads(pickle.dumps(guard))
        assert twin.lock is not guard.lock
        taken = []
        other = threading.Thread(target=lambda: taken.append(twin.lock.acquire(False)))
        other.start()
        other.join(20)
        assert taken == [True]  # free for another thread, unlike the original
    finally:
        guard.lock.release()


def test_an_object_built_without_a_guard_gets_one() -> None:
    counter = Counter.__new__(Counter)  # as an object restored without __init__
    counter.calls = 0
    assert counter.add(3) == 3
    assert isinstance(counter._guard, Guard)
