"""Where each block's parameters sit in its flat vector.

A block's mathematics runs on one flat vector; this module gathers the block's tensors
into it and scatters the result back into the caller's arrays in place.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from dataclasses import dataclass

from array_api_compat import device

from .core.types import Array, Namespace


def numel(shape: Sequence[int]) -> int:
    """The number of elements of an array of this shape."""
    return math.prod(int(d) for d in shape)


@dataclass(frozen=True)
class BlockLayout:
    """The parameter indices of one block, in flattening order, with their shapes."""

    indices: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, index: int, indices: Sequence[int], params: Sequence[Array]) -> BlockLayout:
        """The layout of block ``index``; its tensors must share one dtype and device."""
        first = params[indices[0]]
        for i in indices:
            if params[i].dtype != first.dtype or device(params[i]) != device(first):
                raise ValueError(
                    f"blocks[{index}] mixes dtypes or devices (params[{indices[0]}] and "
                    f"params[{i}]); put such parameters in separate blocks"
                )
        return cls(tuple(indices), tuple(tuple(int(d) for d in params[i].shape) for i in indices))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(numel(shape) for shape in self.shapes)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def gather(self, xp: Namespace, arrays: Sequence[Array]) -> Array:
        """The block's arrays as one flat vector (a new array, or a view for one tensor)."""
        parts = [xp.reshape(arrays[i], (-1,)) for i in self.indices]
        return parts[0] if len(parts) == 1 else xp.concat(parts)

    def scatter(
        self, xp: Namespace, flat: Array, arrays: Sequence[Array], keep: Container[int] = ()
    ) -> None:
        """Write ``flat`` back into the block's arrays, in place (not those in ``keep``)."""
        offset = 0
        for i, shape, size in zip(self.indices, self.shapes, self.sizes, strict=True):
            if i not in keep:
                arrays[i][...] = xp.reshape(flat[offset : offset + size], shape)
            offset += size
