"""What ``MLBFGS.stats`` and ``MLBFGS.history_bytes`` report about this rank's blocks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..core import BlockState
from ..core.types import Array, Namespace
from .layout import numel


def block_stats(index: int, block: BlockState) -> dict[str, Any]:
    """What block ``index``'s curvature did: pairs stored, pushed and rejected, the last
    ``mu`` and ``tau`` of Eq (7), ``gamma`` (NaN before the first pair), skipped steps."""
    return {
        "block": index,
        "pairs_stored": len(block.history),
        "pairs_pushed": block.stats.pairs_pushed,
        "pairs_rejected": block.stats.pairs_rejected,
        "mu": block.stats.mu,
        "tau": block.stats.tau,
        "gamma": block.form.gamma if block.form is not None else math.nan,
        "skipped_steps": block.stats.skipped_steps,
    }


def history_bytes(xp: Namespace, blocks: Iterable[BlockState]) -> int:
    """Bytes of curvature history (pairs, Gram matrices, scales) of ``blocks``."""
    total = 0
    for block in blocks:
        for array in block.history.arrays():
            total += numel(array.shape) * _itemsize(xp, array)
    return total


def _itemsize(xp: Namespace, array: Array) -> int:
    """Bytes per element of a floating-point array of any array-API library."""
    return int(xp.finfo(array.dtype).bits) // 8
