"""Blocks as pieces of the flattened parameters (mlbfgs/core/pieces.py): element-balanced
blocks, explicit blocks with ranges, and the ``blocks`` argument resolved."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbfgs.core.pieces import (
    BALANCE,
    MIN_BLOCK,
    balanced_pieces,
    default_block_count,
    resolve_blocks,
    validate_pieces,
    whole,
)
from mlbfgs.engine.assignment import assign_blocks, rank_counts


def covered_once(blocks: list[list[tuple[int, int, int]]], sizes: list[int]) -> None:
    """Blocks list their pieces in order, each element of each tensor is in exactly one
    piece, and a tensor of no elements is in exactly one block."""
    flat = [piece for block in blocks for piece in block]
    assert flat == sorted(flat)
    for i, size in enumerate(sizes):
        own = [(start, stop) for j, start, stop in flat if j == i]
        assert own, f"params[{i}] in no block"
        if size == 0:
            assert own == [(0, 0)]
            continue
        assert own[0][0] == 0 and own[-1][1] == size
        assert all(a < b for a, b in own)
        assert all(prev[1] == nxt[0] for prev, nxt in zip(own, own[1:], strict=False))


def elements(block: list[tuple[int, int, int]]) -> int:
    return sum(stop - start for _, start, stop in block)


@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=8).filter(lambda s: sum(s) > 0),
    data=st.data(),
)
def test_balanced_blocks_cover_everything_once_and_are_within_a_few_percent(sizes, data) -> None:
    total = sum(sizes)
    parts = data.draw(st.integers(1, min(total, 16)))
    blocks = balanced_pieces(sizes, parts)
    assert len(blocks) == parts
    covered_once(blocks, sizes)
    share = total / parts
    for block in blocks:
        assert elements(block) >= 1
        # A cut moves from its ideal place by at most 2% of a share (to a tensor
        # boundary) or half the alignment unit (at most a 128th of a share, inside one).
        assert abs(elements(block) - share) <= 0.04 * share + 2, (blocks, share)


def test_a_cut_inside_a_tensor_falls_on_the_alignment_unit() -> None:
    # 1000 elements in 2 parts: the nearest boundary (450) is 50 from the ideal cut 500,
    # more than 2% of a share (10), so tensor 3 is cut at 450 + 7 * 7 = 499: the unit is
    # min(64, 1000 // (64 * 2)) = 7 and (500 - 450) / 7 rounds to 7.
    assert balanced_pieces([100, 300, 50, 550], 2) == [
        [(0, 0, 100), (1, 0, 300), (2, 0, 50), (3, 0, 49)],
        [(3, 49, 550)],
    ]
    # With a larger model the unit is 64: the ideal cut 6400 is 6300 into tensor 1, which
    # is cut after 98 units (6300 / 64 = 98.4); a unit of 32 gives 197 units (196.9).
    assert balanced_pieces([100, 12700], 2) == [[(0, 0, 100), (1, 0, 6272)], [(1, 6272, 12700)]]
    assert balanced_pieces([100, 12700], 2, unit=32) == [
        [(0, 0, 100), (1, 0, 6304)],
        [(1, 6304, 12700)],
    ]


def test_the_unit_is_at_most_a_64th_of_a_share() -> None:
    # 1280 elements in 2 parts: unit min(64, 1280 // 128) = 10, so the cut is exact.
    assert balanced_pieces([1280], 2) == [[(0, 0, 640)], [(0, 640, 1280)]]
    # 8 elements in 7 parts: unit 1, one block of two where 8 / 7 rounds up.
    assert [sum(b - a for _, a, b in block) for block in balanced_pieces([8], 7)] == [
        1,
        1,
        1,
        2,
        1,
        1,
        1,
    ]


def test_a_close_layer_boundary_is_kept() -> None:
    # the nearer of the two boundaries around the ideal cut (505, not 300)
    assert balanced_pieces([300, 205, 495], 2) == [[(0, 0, 300), (1, 0, 205)], [(2, 0, 495)]]
    assert balanced_pieces([495, 505], 2) == [[(0, 0, 495)], [(1, 0, 505)]]  # 5 < 2% of 500
    assert balanced_pieces([505, 495], 2) == [[(0, 0, 505)], [(1, 0, 495)]]
    assert balanced_pieces([490, 510], 2) == [[(0, 0, 490)], [(1, 0, 510)]]  # exactly 2%
    # 11 > 2%: the cut goes inside tensor 1, at 2 units of 7 (11 / 7 = 1.6).
    assert balanced_pieces([489, 511], 2) == [[(0, 0, 489), (1, 0, 14)], [(1, 14, 511)]]
    assert balanced_pieces([489, 511], 2, slack=0.03) == [[(0, 0, 489)], [(1, 0, 511)]]


def test_three_parts_and_empty_tensors() -> None:
    assert balanced_pieces([0, 10, 0, 10, 0], 2) == [
        [(0, 0, 0), (1, 0, 10)],
        [(2, 0, 0), (3, 0, 10), (4, 0, 0)],
    ]
    # unit 3000 // (64 * 3) = 15: cuts at 67 and 133 units (1000 / 15 = 66.7, 133.3)
    assert balanced_pieces([3000], 3) == [[(0, 0, 1005)], [(0, 1005, 1995)], [(0, 1995, 3000)]]
    assert balanced_pieces([7], 7) == [[(0, k, k + 1)] for k in range(7)]
    assert balanced_pieces([5, 5], 1) == [[(0, 0, 5), (1, 0, 5)]]


@pytest.mark.parametrize("parts", [0, 11, -1])
def test_balanced_blocks_need_between_one_and_all_elements(parts: int) -> None:
    with pytest.raises(ValueError, match=re.escape("between 1 and the number of elements (10)")):
        balanced_pieces([4, 6], parts)


def test_explicit_blocks_take_indices_and_ranges() -> None:
    sizes = [3, 10, 4]
    assert validate_pieces([[0, (1, 0, 5)], [(1, 5, 10), 2]], sizes) == [
        [(0, 0, 3), (1, 0, 5)],
        [(1, 5, 10), (2, 0, 4)],
    ]
    assert validate_pieces([[2, 1, 0]], sizes) == [[(2, 0, 4), (1, 0, 10), (0, 0, 3)]]
    assert validate_pieces([[(0, 0, 2)], [(0, 2, 3), 1, 2]], sizes)[0] == [(0, 0, 2)]
    assert validate_pieces([[(1, 6, 10)], [0, 2, (1, 0, 6)]], sizes)[1][2] == (1, 0, 6)


@pytest.mark.parametrize(
    ("blocks", "error", "message"),
    [
        ([[0, 1], "2"], ValueError, "blocks[1] must be a non-empty list of parameter indices"),
        ([[0, 1], []], ValueError, "blocks[1] must be a non-empty list of parameter indices"),
        ([[0, 1], 2], ValueError, "blocks[1] must be a non-empty list of parameter indices"),
        ([[0, 1, (2, 0)]], ValueError, "blocks[0] holds (2, 0): a range is (index, start, stop)"),
        ([[0, 1, (2, 0, True)]], ValueError, "a range is (index, start, stop)"),
        ([[0, 1, (2, 0, 1.5)]], TypeError, "blocks[0] holds (2, 0, 1.5), not integers"),
        (
            [[0, 1], [(2, 0, 5)]],
            ValueError,
            "[1] holds the range (2, 0, 5), outside params[2]",
        ),
        ([[0, 1], [(2, 2, 2)]], ValueError, "holds the range (2, 2, 2), outside params[2]"),
        ([[0, 1], [(2, -1, 2)]], ValueError, "holds the range (2, -1, 2), outside params[2]"),
        ([[0, 1], [(3, 0, 1)]], ValueError, "holds the range (3, 0, 1), outside params[3]"),
        ([[0, 1], [-1]], ValueError, "blocks[1] holds index -1, outside [0, 3)"),
        ([[0, 1], [3]], ValueError, "blocks[1] holds index 3, outside [0, 3)"),
        ([[0, 1], [True]], ValueError, "blocks[1] holds index True, outside [0, 3)"),
        ([[0, 1], [2.0]], TypeError, "blocks[1] holds 2.0, not an integer index"),
        (
            [[0, 1], [(2, 0, 3), (2, 2, 4)]],
            ValueError,
            "params[2] element 2 is covered twice (blocks[1])",
        ),
        ([[0, 1], [(2, 1, 4)]], ValueError, "params[2] element 0 is covered not at all"),
        ([[0, 1], [2], [0]], ValueError, "params[0] element 0 is covered twice (blocks[2])"),
        ([[0, 1], [(2, 0, 3)]], ValueError, "params[2] is missing or cut short"),
        ([[0, 1]], ValueError, "params[2] is missing or cut short"),
    ],
)
def test_explicit_blocks_are_refused_naming_the_item(
    blocks: list, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        validate_pieces(blocks, [2, 5, 4])


def test_the_blocks_argument_resolves_to_pieces() -> None:
    sizes = [10, 20, 30, 40]
    assert resolve_blocks(None, sizes, 1) == [whole(range(4), sizes)]
    assert resolve_blocks(None, sizes, 3) == balanced_pieces(sizes, 3)
    assert resolve_blocks(None, sizes, 2) == [
        [(0, 0, 10), (1, 0, 20), (2, 0, 20)],
        [(2, 20, 30), (3, 0, 40)],
    ]
    assert resolve_blocks(2, sizes, 1) == [whole([0, 1, 2], sizes), whole([3], sizes)]
    assert resolve_blocks(2, sizes, 5) == resolve_blocks(2, sizes, 1)  # layers ignore ranks
    assert resolve_blocks([[1, 0], [(2, 0, 30), 3]], sizes, 2) == [
        [(1, 0, 20), (0, 0, 10)],
        [(2, 0, 30), (3, 0, 40)],
    ]
    assert whole([2], sizes) == [(2, 0, 30)]
    with pytest.raises(
        TypeError, match=r"^blocks must be None, an int or a list of index lists, not a bool$"
    ):
        resolve_blocks(False, sizes, 1)
    for bad in ("0", 1.5, {0: 1}):
        with pytest.raises(TypeError, match="blocks must be None, an int or a list"):
            resolve_blocks(bad, sizes, 1)


# -- blocks=None: a property of the model (design section 3, "Blocks") ---------------------

MLP = [256 * 64, 256, 256 * 256, 256, 10 * 256, 10]  # examples/train_distributed.py: 85,002


def largest_rank_share(sizes: list[int], ranks: int) -> float:
    blocks = [elements(block) for block in resolve_blocks(None, sizes, ranks)]
    counts = rank_counts(blocks, assign_blocks(blocks, ranks))
    return max(counts) / (sum(counts) / ranks)


@pytest.mark.parametrize(
    ("total", "alone", "same_on"),
    [
        (2 * MIN_BLOCK, 2, [1, 2]),  # two blocks: 4 and 8 ranks need more
        (4 * MIN_BLOCK, 4, [1, 2, 4]),
        (85_002, 8, [1, 2, 4, 8]),
        (32 * MIN_BLOCK, 8, [1, 2, 4, 8]),  # DEFAULT_BLOCKS, though MIN_BLOCK allows 32
        (25_557_032, 16, [1, 2, 4, 8]),  # one per BLOCK_ELEMENTS above 16 of them
        (10**9, 512, [1, 2, 4, 8]),
    ],
)
def test_default_blocks_are_a_power_of_two_the_same_on_1_2_4_and_8_ranks(
    total: int, alone: int, same_on: list[int]
) -> None:
    assert default_block_count(total) == alone
    assert [r for r in (1, 2, 4, 8) if default_block_count(total, r) == alone] == same_on


def test_default_blocks_of_a_small_model_are_one_alone_and_one_per_rank() -> None:
    """Below 2 * MIN_BLOCK elements a block would be too small to amortise its per-step
    cost: one block on one process, and on p ranks one per rank (as before)."""
    total = 2 * MIN_BLOCK - 1
    assert [default_block_count(total, ranks) for ranks in (1, 2, 3, 4, 7)] == [1, 2, 3, 4, 7]
    assert default_block_count(5, 8) == 5  # never more blocks than elements


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5, 6, 7, 8, 16, 64, 1024])
def test_default_blocks_hold_every_rank_within_5_percent_of_the_even_share(ranks: int) -> None:
    """On the distributed example's MLP and on a ResNet-like model (62 tensors whose sizes
    double stage by stage, 11.7M elements): benchmarks/balance.py prints the real shapes."""
    resnet_like = [64 * 2 ** (k // 16) * 9 * 64 * 2 ** (k // 16) for k in range(62)]
    for sizes in (MLP, resnet_like):
        assert largest_rank_share(sizes, ranks) <= BALANCE, sizes


def test_default_blocks_differ_from_one_process_only_where_the_world_needs_it() -> None:
    """The MLP's 8 blocks on 3, 5, 6 and 7 ranks would leave a rank 12-75% above the even
    share: there the blocks become 9, 10, 12 and 14 (multiples of p; halving them would
    go below MIN_BLOCK)."""
    assert [default_block_count(sum(MLP), ranks) for ranks in range(1, 9)] == [
        8,
        8,
        9,
        8,
        10,
        12,
        14,
        8,
    ]
    assert resolve_blocks(None, MLP, 4) == resolve_blocks(None, MLP, 1) == balanced_pieces(MLP, 8)


def test_default_blocks_are_halved_for_balance_while_they_keep_min_block() -> None:
    """32 MIN_BLOCK elements on 3 ranks: 8 blocks, and 16, leave the largest rank 12.5% over
    the even share; 32 hold it 3.1% over (11 of 32), each block still MIN_BLOCK. One
    MIN_BLOCK fewer and 32 would be too small: the count is the next multiple of 3."""
    assert default_block_count(32 * MIN_BLOCK, 3) == 32
    assert default_block_count(31 * MIN_BLOCK, 3) == 9
