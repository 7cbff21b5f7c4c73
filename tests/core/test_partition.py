"""Balanced contiguous block partitions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbfgs.core import balanced_partition
from mlbfgs.core.partition import validate_partition


def best_max_load(sizes: list[int], parts: int) -> int:
    """Brute force over all cut positions."""
    best = sum(sizes)
    for cuts in itertools.combinations(range(1, len(sizes)), parts - 1):
        bounds = [0, *cuts, len(sizes)]
        best = min(best, max(sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)))
    return best


@given(sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=9), data=st.data())
def test_partition_is_contiguous_complete_and_optimal(sizes, data) -> None:
    parts = data.draw(st.integers(1, len(sizes)))
    blocks = balanced_partition(sizes, parts)
    assert len(blocks) == parts
    assert all(blocks)
    assert [i for block in blocks for i in block] == list(range(len(sizes)))
    assert max(sum(sizes[i] for i in block) for block in blocks) == best_max_load(sizes, parts)


def test_partition_rejects_too_many_parts() -> None:
    with pytest.raises(ValueError, match="blocks"):
        balanced_partition([1, 2], 3)


def test_validate_partition_keeps_explicit_order() -> None:
    assert validate_partition([[2, 0], [1]], 3) == [[2, 0], [1]]
    with pytest.raises(TypeError, match=r"blocks\[0\]"):
        validate_partition([[0.5]], 1)
    with pytest.raises(ValueError, match=r"blocks\[0\]"):
        validate_partition([[True]], 2)
