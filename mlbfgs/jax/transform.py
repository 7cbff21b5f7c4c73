"""``mlbfgs(learning_rate, ...)``: mL-BFGS as an optax ``GradientTransformation``.

The pytree's leaves are flattened and cut into the engine's curvature blocks (the same
``blocks`` argument, the same default, ``core/pieces.py``); each block is one flat vector
to the pure step (``core/functional.py``). The block structure is static, so ``update``
traces into one program for ``jax.jit``; the state is a :class:`PureState`, a NamedTuple
of arrays with the step count as an array, which ``pickle`` round-trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ..backends.jax import JaxKernels
from ..core.config import Hyperparameters, MLBFGSConfig, Preset
from ..core.functional import PureState, init, step
from .blocks import flatten, gather, leaf_partition, scatter
from .sharded import Schedule, ShardedState, sharded_mlbfgs, unstack

if TYPE_CHECKING:
    from typing_extensions import Unpack


def mlbfgs(
    learning_rate: float | Schedule = 0.1,
    *,
    blocks: int | Sequence[Sequence[Any]] | None = None,
    preset: Preset | None = None,
    mesh: Mesh | None = None,
    axis: str | None = None,
    **hyperparameters: Unpack[Hyperparameters],
) -> optax.GradientTransformation:
    """Momentum-based, damped, block-diagonal stochastic L-BFGS (Niu et al.) for optax.

    ``update`` returns ``-lr * d`` per leaf (``optax.apply_updates`` then gives
    ``theta - lr * d`` exactly, as ``mlbfgs.MLBFGS`` does), and a leaf block whose gradient
    is not finite gets a zero update and keeps its state (``stats(state)`` counts it).

    Args:
        learning_rate: a float, or an optax schedule called with the number of steps taken
            so far (0 at the first step, optax's convention).
        blocks: the curvature blocks, as ``mlbfgs.MLBFGS`` takes them over the flattened
            leaves (``jax.tree_util.tree_leaves`` order): ``None`` the element-balanced
            default, ``k`` blocks of whole leaves, or lists of leaf indices or
            ``(index, start, stop)`` ranges of a flattened leaf.
        preset: ``None``, ``"paper"`` or ``"released"``, as ``mlbfgs.MLBFGS``.
        mesh, axis: shard the blocks over the devices of ``mesh``'s ``axis`` (the only
            axis by default): each device holds and preconditions ``1 / D`` of the blocks,
            whose number must then be a multiple of D (the default is, as for D ranks);
            the state is a :class:`ShardedState` (``mlbfgs/jax/sharded.py``).
        **hyperparameters: the fields of :class:`mlbfgs.MLBFGSConfig`, with their names
            and defaults there; ``history_dtype`` must stay ``None`` or ``"float32"``.
            Half-precision leaves (bfloat16, float16) keep a float32 state and get float32
            updates, which ``optax.apply_updates`` adds and rounds once per step.

    Returns:
        An ``optax.GradientTransformation``; ``update`` needs ``params``.

    Raises:
        ValueError, TypeError: a bad hyperparameter, named (at once); a leaf that is not
            floating point or a partition that does not fit the leaves (at ``init``).
    """
    config = MLBFGSConfig.from_preset(preset, **hyperparameters)
    if config.history_dtype not in (None, "float32"):
        raise ValueError(
            f"history_dtype={config.history_dtype!r} is not supported by mlbfgs.jax yet; "
            "use None or 'float32'"
        )
    if not (callable(learning_rate) or isinstance(learning_rate, int | float)):
        raise TypeError(f"learning_rate must be a float or a schedule, got {learning_rate!r}")
    if mesh is not None:
        if axis is None and len(mesh.axis_names) != 1:
            raise ValueError(f"axis: name one of mesh's axes {mesh.axis_names}")
        name = str(mesh.axis_names[0]) if axis is None else axis
        return sharded_mlbfgs(config, learning_rate, blocks, mesh, name)
    kernels = JaxKernels(jnp)

    def init_fn(params: Any) -> PureState:
        leaves = jax.tree_util.tree_leaves(params)
        partition = leaf_partition(leaves, blocks)
        # Uncommitted, as optax's own states, so that a jitted step is compiled once.
        return init(jnp, gather(leaves, partition), config, kernels.gram_dtype, on=None)

    def update_fn(updates: Any, state: PureState, params: Any = None) -> tuple[Any, PureState]:
        leaves, grads, treedef = flatten(params, updates)
        partition = leaf_partition(leaves, blocks)
        lr = learning_rate(state.step) if callable(learning_rate) else float(learning_rate)
        steps, state = step(
            state, gather(leaves, partition), gather(grads, partition), lr, config, kernels
        )
        return jax.tree_util.tree_unflatten(treedef, scatter(steps, partition, leaves)), state

    return optax.GradientTransformation(init_fn, update_fn)


def stats(state: PureState | ShardedState) -> list[dict[str, Any]]:
    """Per block, what ``mlbfgs.MLBFGS.stats()`` reports (host values; not under jit)."""
    blocks = (
        unstack(jax.device_get(state.blocks)) if isinstance(state, ShardedState) else state.blocks
    )
    return [
        {
            "pairs_stored": min(int(block.pushed), int(block.pairs.shape[0]) // 2),
            "pairs_pushed": int(block.pushed),
            "pairs_rejected": int(block.rejected),
            "skipped_steps": int(block.skipped),
            "mu": float(block.mu),
            "tau": float(block.tau),
            "gamma": float(block.gamma),
            "average_stalled": float(block.average_stalled),
        }
        for block in blocks
    ]
