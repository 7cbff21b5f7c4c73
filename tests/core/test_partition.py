"""Balanced contiguous block partitions (optimal, by brute force), and the errors of an
explicit partition, each naming the offending block."""

from __future__ import annotations

import itertools
import re
from typing import Any

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


def assert_contiguous_complete_and_optimal(sizes: list[int], parts: int) -> None:
    blocks = balanced_partition(sizes, parts)
    assert len(blocks) == parts and all(blocks)
    assert [i for block in blocks for i in block] == list(range(len(sizes)))
    load = max(sum(sizes[i] for i in block) for block in blocks)
    assert load == best_max_load(sizes, parts), (sizes, parts, blocks)


@given(sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=9), data=st.data())
def test_partition_is_contiguous_complete_and_optimal(sizes, data) -> None:
    assert_contiguous_complete_and_optimal(sizes, data.draw(st.integers(1, len(sizes))))


def test_partition_rejects_too_many_parts() -> None:
    with pytest.raises(ValueError, match="blocks"):
        balanced_partition([1, 2], 3)


def test_validate_partition_keeps_explicit_order() -> None:
    assert validate_partition([[2, 0], [1]], 3) == [[2, 0], [1]]
    with pytest.raises(TypeError, match=r"blocks\[0\]"):
        validate_partition([[0.5]], 1)
    with pytest.raises(ValueError, match=r"blocks\[0\]"):
        validate_partition([[True]], 2)


def test_balanced_partition_is_optimal_on_every_small_case() -> None:
    """Exhaustive over sizes from {1, 2, 3, 7} and up to 5 tensors: small sizes make ties
    and off-by-one capacities matter, which large random sizes rarely reach."""
    for count in range(1, 6):
        for sizes in itertools.product((1, 2, 3, 7), repeat=count):
            for parts in range(1, count + 1):
                assert_contiguous_complete_and_optimal(list(sizes), parts)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([[0, 1], [1, 2]], "parameter 1 is in blocks[0] and blocks[1]"),
        ([[0], [2], [1, 2]], "parameter 2 is in blocks[1] and blocks[2]"),
        (["01", [2]], "blocks[0] must be a non-empty list of parameter indices"),
        ([[0, 1], 2], "blocks[1] must be a non-empty list of parameter indices"),
        ([[0, 1], [2, 3]], "blocks[1] holds index 3, outside [0, 3)"),
        ([[0, 1]], "blocks must cover every parameter; missing indices [2]"),
    ],
)
def test_validate_partition_messages(blocks: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        validate_partition(blocks, 3)
