"""Where each block's parameters sit in its flat vector.

A block's mathematics runs on one flat vector; this module gathers the block's pieces
(whole tensors, or contiguous ranges of a tensor's flattened elements) into it and
scatters the result back into the caller's arrays in place.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from dataclasses import dataclass

from array_api_compat import device

from ..backends import backend_of
from ..core.pieces import Piece
from ..core.types import Array, Namespace


def numel(shape: Sequence[int]) -> int:
    """The number of elements of an array of this shape."""
    return math.prod(int(d) for d in shape)


@dataclass(frozen=True)
class BlockLayout:
    """The pieces of one block, in flattening order, with their tensors' shapes."""

    pieces: tuple[Piece, ...]
    shapes: tuple[tuple[int, ...], ...]
    """The full shape of each piece's tensor."""

    @classmethod
    def of(cls, index: int, pieces: Sequence[Piece], params: Sequence[Array]) -> BlockLayout:
        """The layout of block ``index``; its tensors must share one dtype and device, and
        a tensor split across blocks must be contiguous (its slices are written in place)."""
        first = params[pieces[0][0]]
        shapes = tuple(tuple(int(d) for d in params[i].shape) for i, _, _ in pieces)
        for (i, start, stop), shape in zip(pieces, shapes, strict=True):
            if params[i].dtype != first.dtype or device(params[i]) != device(first):
                raise ValueError(
                    f"blocks[{index}] mixes dtypes or devices (params[{pieces[0][0]}] and "
                    f"params[{i}]); put such parameters in separate blocks"
                )
            if (start, stop) != (0, numel(shape)) and not backend_of(params[i]).writes_through(
                params[i]
            ):
                raise ValueError(
                    f"blocks[{index}] holds part of params[{i}], which is not contiguous: "
                    "only a contiguous array can be split across blocks"
                )
        return cls(tuple(pieces), shapes)

    @classmethod
    def whole(cls, indices: Sequence[int], params: Sequence[Array]) -> BlockLayout:
        """A block of whole tensors."""
        return cls.of(0, [(i, 0, numel(params[i].shape)) for i in indices], params)

    @property
    def indices(self) -> tuple[int, ...]:
        """The parameters the block touches (a split one appears in several blocks)."""
        return tuple(i for i, _, _ in self.pieces)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(stop - start for _, start, stop in self.pieces)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def _parts(self, xp: Namespace, arrays: Sequence[Array]) -> list[Array]:
        """The pieces of ``arrays`` as flat views (slices of a flat view for a part)."""
        parts = []
        for (i, start, stop), shape in zip(self.pieces, self.shapes, strict=True):
            flat = xp.reshape(arrays[i], (-1,))
            parts.append(flat if (start, stop) == (0, numel(shape)) else flat[start:stop])
        return parts

    def gather(self, xp: Namespace, arrays: Sequence[Array]) -> Array:
        """The block's arrays as one flat vector (a new array, or a view for one piece)."""
        parts = self._parts(xp, arrays)
        return parts[0] if len(parts) == 1 else xp.concat(parts)

    def gather_into(self, xp: Namespace, arrays: Sequence[Array], out: Array) -> None:
        """:meth:`gather` written into ``out`` (no intermediate copy)."""
        offset = 0
        for part in self._parts(xp, arrays):
            out[offset : offset + part.shape[0]] = part
            offset += part.shape[0]

    def scatter(
        self, xp: Namespace, flat: Array, arrays: Sequence[Array], keep: Container[int] = ()
    ) -> None:
        """Write ``flat`` back into the block's arrays, in place (not those in ``keep``)."""
        offset = 0
        for (i, start, stop), shape in zip(self.pieces, self.shapes, strict=True):
            size = stop - start
            if i not in keep:
                if (start, stop) == (0, numel(shape)):
                    arrays[i][...] = xp.reshape(flat[offset : offset + size], shape)
                else:  # a contiguous tensor's flat view (checked in BlockLayout.of)
                    view = xp.reshape(arrays[i], (-1,))
                    view[start:stop] = flat[offset : offset + size]
            offset += size
