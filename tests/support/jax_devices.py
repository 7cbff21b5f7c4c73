"""Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``: mL-BFGS with its blocks
sharded over 4 CPU devices against one device, in float64; prints a JSON line.

``tests/jax/test_functional.py`` launches it in a child process, because the device count
is fixed when JAX starts.
"""

from __future__ import annotations

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import mlbfgs.jax  # noqa: E402

BLOCKS = [[0], [1], [(2, 0, 20)], [(2, 20, 35)]]
"""Leaves in tree order: b (9), c (4), w (35, cut in two); blocks of 9, 4, 20 and 15."""


def run(opt: optax.GradientTransformation, steps: int) -> tuple[list[np.ndarray], object]:
    """A noisy quadratic over a pytree of three leaves (one cut across two blocks)."""
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((5, 7))),
        "b": jnp.asarray(rng.standard_normal(9)),
        "c": jnp.asarray(rng.standard_normal(4)),
    }
    curvature = jax.tree_util.tree_map(
        lambda p: jnp.linspace(0.2, 5.0, p.size).reshape(p.shape), params
    )
    update = jax.jit(opt.update)
    state = opt.init(params)
    for k in range(steps):
        grads = jax.tree_util.tree_map(
            lambda c, p, k=k: c * p + 0.1 * jnp.sin(3.0 * k + p), curvature, params
        )
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)], state


def main() -> None:
    mesh = jax.make_mesh((4,), ("blocks",))
    report: dict[str, object] = {"devices": len(jax.devices())}
    for step_norm in ("gradient", "unit"):
        options = {"update_every": 3, "history_size": 3, "step_norm": step_norm}
        sharded, state = run(mlbfgs.jax.mlbfgs(0.1, blocks=BLOCKS, mesh=mesh, **options), 60)
        single, _ = run(mlbfgs.jax.mlbfgs(0.1, blocks=BLOCKS, **options), 60)
        error = max(
            float(np.linalg.norm(a - b) / np.linalg.norm(b))
            for a, b in zip(sharded, single, strict=True)
        )
        holders = {shard.device.id for shard in state.blocks.pairs.addressable_shards}
        report[step_norm] = {
            "relative_error": error,
            "pairs_on_devices": len(holders),
            "pushed": [block["pairs_pushed"] for block in mlbfgs.jax.stats(state)],
        }
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
