"""The blocks' flat vectors over a pytree's leaves (static: shapes only).

``blocks`` means what it means to ``mlbfgs.MLBFGS`` (``core/pieces.py``), over the leaves in
``jax.tree_util.tree_leaves`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ..core.kernels import state_dtype
from ..core.pieces import Piece, resolve_blocks


def flatten(params: Any, updates: Any) -> tuple[list[jax.Array], list[jax.Array], Any]:
    """``update``'s inputs as ``(param leaves, gradient leaves, params' PyTreeDef)``;
    raises ``ValueError`` naming the argument that is missing or of another structure."""
    if params is None:
        raise ValueError("mlbfgs.jax.mlbfgs needs params: call update(grads, state, params)")
    flat: tuple[list[Any], Any] = jax.tree_util.tree_flatten(params)  # PyTreeDef: untyped
    (leaves, treedef), (grads, grads_def) = flat, jax.tree_util.tree_flatten(updates)
    if grads_def != treedef:
        raise ValueError(f"updates must have params' structure {treedef}, got {grads_def}")
    return leaves, grads, treedef


def leaf_partition(
    leaves: Sequence[jax.Array], blocks: object, devices: int = 1
) -> list[list[Piece]]:
    """The blocks' pieces over the leaves (static: shapes only)."""
    for i, leaf in enumerate(leaves):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"params leaf {i} has dtype {leaf.dtype}; mL-BFGS needs floating point")
    return resolve_blocks(blocks, [int(leaf.size) for leaf in leaves], devices)


def state_of(dtype: Any) -> Any:
    """The dtype of a block's state for leaves of ``dtype`` (``core/kernels.py``)."""
    return state_dtype(jnp, dtype)


def gather(leaves: Sequence[jax.Array], partition: list[list[Piece]]) -> list[jax.Array]:
    """Each block's flat vector, its pieces in order, in the dtype of the block's state and
    step: float32 for half-precision leaves (``core/kernels.py``, ``state_dtype``), whose
    parameters ``optax.apply_updates`` then rounds once per step, as the engine does."""
    flat = [jnp.ravel(jnp.astype(leaf, state_of(leaf.dtype))) for leaf in leaves]
    return [
        jnp.concatenate([flat[index][start:stop] for index, start, stop in pieces])
        for pieces in partition
    ]


def scatter(
    vectors: Sequence[jax.Array], partition: list[list[Piece]], leaves: Sequence[jax.Array]
) -> list[jax.Array]:
    """The inverse of :func:`gather`: each leaf from the pieces that cover it."""
    parts: list[list[tuple[int, jax.Array]]] = [[] for _ in leaves]
    for vector, pieces in zip(vectors, partition, strict=True):
        offset = 0
        for index, start, stop in pieces:
            parts[index].append((start, vector[offset : offset + stop - start]))
            offset += stop - start
    return [
        jnp.reshape(jnp.concatenate([v for _, v in sorted(found, key=lambda p: p[0])]), leaf.shape)
        for found, leaf in zip(parts, leaves, strict=True)
    ]
