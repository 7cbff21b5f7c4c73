"""``MLBFGS.stats()``: what each block's curvature did, and a warning when it cannot work;
``MLBFGS.history_bytes()``.

Pairs can be pushed, accepted and damped with healthy-looking ``mu`` and ``tau`` and still
be rounding noise: when the parameter average of Eq (5) stops moving because its
increment ``(1 - beta) * (theta - M)`` is below the state's resolution (a bfloat16 state,
or ``hessian_momentum`` too close to 1 for float32), s of Eq (6) is mostly zeros. The
counters cannot show that, so the report measures it (``average_stalled``) and warns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from ..core import BlockState
from ..core.types import Array, Namespace
from .layout import numel

STALLED_WARNING = 0.05
"""``stats()`` warns when more than this share of a block's parameter average stalled.

Measured on the digits MLP of ``benchmarks/half_precision.py``: float32 state stays below
it, a bfloat16 state exceeds it from the first pair on."""


def block_report(blocks: Mapping[int, BlockState]) -> list[dict[str, Any]]:
    """One dict per block, in the order given.

    Keys: ``block``; ``pairs_stored``, ``pairs_pushed``, ``pairs_rejected``; the last
    ``mu`` and ``tau`` of Eq (7); ``gamma`` (NaN before the first pair); ``skipped_steps``
    (non-finite gradients); ``average_stalled``: the share of the parameter average's
    entries that did not move over the newest pair's T steps although Eq (5) would have
    moved them (NaN before the first pair). A share above :data:`STALLED_WARNING` raises a
    ``RuntimeWarning`` naming the blocks.
    """
    result = [
        {
            "block": b,
            "pairs_stored": len(block.history),
            "pairs_pushed": block.stats.pairs_pushed,
            "pairs_rejected": block.stats.pairs_rejected,
            "mu": block.stats.mu,
            "tau": block.stats.tau,
            "gamma": block.form.gamma if block.form is not None else math.nan,
            "skipped_steps": block.stats.skipped_steps,
            "average_stalled": block.stats.average_stalled,
        }
        for b, block in blocks.items()
    ]
    stalled = [r for r in result if r["average_stalled"] > STALLED_WARNING]
    if stalled:
        shares = ", ".join(f"block {r['block']}: {r['average_stalled']:.1%}" for r in stalled)
        warnings.warn(
            f"the parameter average of Eq (5) stopped moving ({shares} of its entries did not "
            "change over the last update_every steps although the parameters were away from "
            "it): hessian_momentum is too close to 1 for the precision of the optimizer "
            "state, and the curvature pairs are rounding noise",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


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
