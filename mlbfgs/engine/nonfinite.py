"""Non-finite gradients: the step's certificate, and where a NaN or infinity came from.

A step certifies each owned block's gradient from one reduction it needs anyway, so it
learns *that* a block's (mean) gradient is not finite, not *whose* gradient it was: with
``average_grads`` a NaN in rank 1's gradient reaches the owner of its block through the
reduce-scatter. Only once a failure is known does each rank check its own gradients (one
extra read of them, and one small collective, both on the failure path only), so that
every rank raises the same message naming the rank and parameters the value came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core.kernels import Kernels
from ..core.types import Array, Namespace
from .distributed import BlockExchange
from .shards import ShardExchange


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``step`` under ``on_nonfinite="raise"``; nothing was changed."""


def certify(xp: Namespace, kernels: Kernels, probes: list[list[Array]]) -> list[bool]:
    """Per block, whether its probes are finite, with one host sync in the common case."""
    if not probes:
        return []
    # A sum is finite iff every term is (or the sum overflows: skipping then is right,
    # no useful step comes from such a gradient); it is the cheapest such reduction.
    # Half-precision probes are summed in float32, which cannot overflow on finite
    # terms (the kernels already return float32 products for half-precision arrays).
    totals = [
        sum(
            xp.sum(probe, dtype=xp.float32) if kernels.half(probe.dtype) else xp.sum(probe)
            for probe in block
        )
        for block in probes
    ]
    if math.isfinite(float(sum(totals[1:], totals[0]))):
        return [True] * len(totals)
    return [math.isfinite(float(total)) for total in totals]


def describe(
    xp: Namespace,
    exchange: BlockExchange,
    grads: Sequence[Array],
    bad_blocks: Sequence[Sequence[int]],
    average: bool,
) -> str:
    """The message for blocks ``bad_blocks[r]`` found non-finite by rank ``r``.

    Call on every rank (it joins one collective when distributed).
    """
    if isinstance(exchange, ShardExchange):  # each rank's blocks are its own shards
        return exchange.describe(bad_blocks)
    layouts = exchange.layouts
    read: Sequence[int]
    if average and exchange.distributed:
        read = range(len(grads))  # every entry of this rank's gradient enters the mean
    else:  # each rank reads only its own blocks' entries of its gradient
        read = [i for b in exchange.owned for i in layouts[b].indices]
    mine = [i for i in read if not bool(xp.all(xp.isfinite(grads[i])))]
    sources = exchange.comm.allgather_object(mine) if exchange.distributed else [mine]
    blocks = sorted(b for found in bad_blocks for b in found)
    params = [i for b in blocks for i in layouts[b].indices]
    owners = [r for r, found in enumerate(bad_blocks) if found]
    where = f"block(s) {blocks} (params {params})"
    if exchange.distributed:
        where += f", owned by rank(s) {owners}"
    ranks = [r for r, found in enumerate(sources) if found]
    if ranks:
        detail = "; ".join(f"rank {r}: grads{sources[r]}" for r in ranks)
        origin = f"the NaN or infinity came from ranks {ranks} ({detail})"
    else:
        origin = "every gradient is finite, so the (mean) gradient or its probe overflowed"
    return f"non-finite gradient (or overflow) in {where}; {origin}; nothing was changed"
