"""mL-BFGS's blocks sharded over a mesh axis: each device preconditions its own blocks.

The block-diagonal Hessian of the paper, on JAX devices (docs/distributed.md): the blocks'
state is stacked along a leading axis (each block padded with zeros to the longest) and
sharded over ``axis``, so a device holds ``B / D`` blocks' histories and does their work;
``jax.shard_map`` runs the pure step (``core/functional.py``) on each device's blocks, with
one ``psum`` for ``step_norm="unit"``'s total, and the updates come back whole (XLA
all-gathers them), as the engine's MPI path all-gathers parameters. The gradients are
the caller's (already averaged over data-parallel replicas). Zero padding is exact:
padded coordinates stay zero in every average, pair and direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..backends.jax import JaxKernels
from ..core.config import MLBFGSConfig
from ..core.functional import PureBlock, PureState, init, step
from .blocks import flatten, gather, leaf_partition, scatter, state_of

Schedule = Callable[[jax.Array], jax.Array | float]
"""An optax schedule: the learning rate after a number of steps (an int array)."""


class ShardedState(NamedTuple):
    """The step count (replicated) and every block's state, each field stacked over the
    blocks (leading axis) and sharded over the mesh axis."""

    step: jax.Array
    blocks: PureBlock


def sharded_mlbfgs(
    config: MLBFGSConfig,
    learning_rate: float | Schedule,
    blocks: object,
    mesh: Mesh,
    axis: str,
) -> optax.GradientTransformation:
    """``mlbfgs.jax.mlbfgs(..., mesh=mesh, axis=axis)``: see there."""
    if axis not in mesh.shape:
        raise ValueError(f"axis must name an axis of mesh {dict(mesh.shape)}, got {axis!r}")
    devices, spec = int(mesh.shape[axis]), P(axis)
    kernels = JaxKernels(jnp)

    def layout(leaves: Sequence[jax.Array]) -> tuple[list[Any], int]:
        partition = leaf_partition(leaves, blocks, devices)
        if len(partition) % devices:
            raise ValueError(
                f"blocks: {len(partition)} blocks cannot be shared evenly by the {devices} "
                f"devices of axis {axis!r}; give a multiple of {devices}"
            )
        if len({leaf.dtype for leaf in leaves}) > 1:
            raise TypeError("params: a sharded mlbfgs needs leaves of one dtype")
        return partition, max(sum(b - a for _, a, b in pieces) for pieces in partition)

    def stacked(vectors: Sequence[jax.Array], width: int) -> jax.Array:
        """The blocks' vectors padded to ``width``, one row each, rows sharded over axis."""
        rows = jnp.stack([jnp.pad(v, (0, width - int(v.shape[0]))) for v in vectors])
        return jax.reshard(rows, NamedSharding(mesh, spec))

    def init_fn(params: Any) -> ShardedState:
        leaves = jax.tree_util.tree_leaves(params)
        partition, width = layout(leaves)
        dtype = state_of(leaves[0].dtype)  # float32 for half-precision leaves
        zeros = [jnp.zeros((width,), dtype=dtype) for _ in partition]
        state = init(jnp, zeros, config, kernels.gram_dtype, on=None)
        return ShardedState(
            jax.device_put(state.step, NamedSharding(mesh, P())),
            jax.device_put(stack(state.blocks), NamedSharding(mesh, spec)),
        )

    def local(
        count: jax.Array, blocks: PureBlock, thetas: jax.Array, grads: jax.Array
    ) -> tuple[jax.Array, jax.Array, PureBlock]:
        """This device's blocks, one step."""
        mine = tuple(
            PureBlock(*(field[i] for field in blocks)) for i in range(int(thetas.shape[0]))
        )
        lr = learning_rate(count) if callable(learning_rate) else float(learning_rate)
        updates, state = step(
            PureState(count, mine),
            list(thetas),
            list(grads),
            lr,
            config,
            kernels,
            across=lambda total: jax.lax.psum(total, axis),
        )
        return jnp.stack(updates), state.step, stack(state.blocks)

    mapped = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), spec, spec, spec), out_specs=(spec, P(), spec)
    )

    def update_fn(
        updates: Any, state: ShardedState, params: Any = None
    ) -> tuple[Any, ShardedState]:
        leaves, grads, treedef = flatten(params, updates)
        partition, width = layout(leaves)
        steps, count, blocks = mapped(
            state.step,
            state.blocks,
            stacked(gather(leaves, partition), width),
            stacked(gather(grads, partition), width),
        )
        steps = jax.reshard(steps, NamedSharding(mesh, P()))  # the all-gather of the updates
        sizes = [sum(b - a for _, a, b in pieces) for pieces in partition]
        vectors = [steps[i, :size] for i, size in enumerate(sizes)]
        return jax.tree_util.tree_unflatten(treedef, scatter(vectors, partition, leaves)), (
            ShardedState(count, blocks)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def stack(blocks: Sequence[PureBlock]) -> PureBlock:
    """One :class:`PureBlock` whose fields are the blocks' fields stacked."""
    return PureBlock(*(jnp.stack(fields) for fields in zip(*blocks, strict=True)))


def unstack(blocks: PureBlock) -> tuple[PureBlock, ...]:
    """The inverse of :func:`stack`."""
    count = int(blocks.pushed.shape[0])
    return tuple(PureBlock(*(field[i] for field in blocks)) for i in range(count))
