"""One jitted JAX optimizer step: mlbfgs.jax.mlbfgs against optax's Adam and L-BFGS.

    .venv/bin/python benchmarks/jax_update.py [--repeats 5] [--steps 50] [--no-donate]

For each model (params a dict pytree of float32 MLP weights: the digits MLP 64-256-10 and an
MNIST-sized 784-1024-1024-10), every optimizer runs the same jitted function, ``update``
then ``optax.apply_updates``, on the same random gradients (8 pytrees from one seed, taken
in turn), its params and state donated unless ``--no-donate`` (as a training loop would):
mL-BFGS at its default blocks and at ``blocks=1`` (its other options the defaults),
``optax.adam`` and ``optax.lbfgs`` without a line search (``scale_by_lbfgs``, then
``-lr``), with the same memory M = 10 (``history_size``, optax's ``memory_size``). A
warm-up of ``--warmup`` steps (mL-BFGS's 2T, so that its history is in use) compiles and
fills the memories. Then each repeat times ``--steps`` steps of every optimizer in turn
(the order rotated by one each repeat), waiting on the last result
(``block_until_ready``): 50 steps hold one curvature boundary of mL-BFGS's default T = 50,
whose O(Mn) pair work runs under ``lax.cond`` (``core/functional.py``), so the mean
includes it once per T steps. The table gives the median ms/step over the repeats and its
ratios to Adam and to L-BFGS, all measured in this one run. Nothing is asserted; the
numbers of a run are in docs/jax.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import mlbfgs.jax
from mlbfgs.core.pieces import default_block_count

Params = dict[str, jax.Array]
Step = Callable[[Params, Any, Params], tuple[Params, Any]]
MEMORY = 10
LR = 1e-3
GRADIENTS = 8
MODELS: dict[str, list[int]] = {
    "digits MLP 64-256-10": [64, 256, 10],
    "MLP 784-1024-1024-10": [784, 1024, 1024, 10],
}
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "mL-BFGS (default blocks)": lambda: mlbfgs.jax.mlbfgs(LR, history_size=MEMORY),
    "mL-BFGS (blocks=1)": lambda: mlbfgs.jax.mlbfgs(LR, blocks=1, history_size=MEMORY),
    "optax.adam": lambda: optax.adam(LR),
    "optax.lbfgs (no line search)": lambda: optax.lbfgs(LR, memory_size=MEMORY, linesearch=None),
}


def mlp_params(widths: list[int], key: jax.Array) -> Params:
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"w{i}"] = jax.random.normal(sub, (fan_in, fan_out), jnp.float32) / fan_in**0.5
        params[f"b{i}"] = jnp.zeros(fan_out, jnp.float32)
    return params


def random_grads(params: Params, key: jax.Array) -> list[Params]:
    grads = []
    for k in jax.random.split(key, GRADIENTS):
        keys = dict(zip(params, jax.random.split(k, len(params)), strict=True))
        grads.append(
            {n: 0.01 * jax.random.normal(keys[n], p.shape, p.dtype) for n, p in params.items()}
        )
    return grads


def make_step(opt: optax.GradientTransformation, donate: bool) -> Step:
    def step(params: Params, state: Any, grads: Params) -> tuple[Params, Any]:
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def run(
    step: Step, carry: tuple[Params, Any], grads: list[Params], steps: int, first: int
) -> tuple[tuple[Params, Any], float]:
    """``steps`` steps from ``carry``; the new carry and the seconds they took."""
    start = time.perf_counter()
    params, state = carry
    for k in range(steps):
        params, state = step(params, state, grads[(first + k) % len(grads)])
    jax.block_until_ready((params, state))
    return (params, state), time.perf_counter() - start


def bench(
    widths: list[int], repeats: int, steps: int, donate: bool, warmup: int
) -> dict[str, float]:
    """Median ms/step of each optimizer on the MLP of ``widths``."""
    params = mlp_params(widths, jax.random.key(0))
    grads = random_grads(params, jax.random.key(1))
    steps_of: dict[str, Step] = {}
    carries: dict[str, tuple[Params, Any]] = {}
    for name, make in OPTIMIZERS.items():
        opt = make()
        own = jax.tree.map(jnp.copy, params)  # donated: each optimizer its own copy
        steps_of[name] = make_step(opt, donate)
        # copied: optax.lbfgs's init state (0.2.8) shares one buffer among several leaves,
        # which a donating jit refuses ("Attempt to donate the same buffer twice")
        state = jax.tree.map(jnp.copy, opt.init(own))
        carries[name], _ = run(steps_of[name], (own, state), grads, warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    names = list(OPTIMIZERS)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            carries[name], seconds = run(steps_of[name], carries[name], grads, steps, r * steps)
            times[name].append(1e3 * seconds / steps)
    return {name: statistics.median(ms) for name, ms in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="per repeat; T = 50 by default")
    parser.add_argument("--warmup", type=int, default=100, help="steps before timing")
    parser.add_argument("--no-donate", dest="donate", action="store_false")
    args = parser.parse_args()
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].device_kind}; "
        f"float32, M = {MEMORY}, {'donated' if args.donate else 'not donated'}, "
        f"median of {args.repeats} x {args.steps} steps after {args.warmup}"
    )
    for model, widths in MODELS.items():
        n = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
        blocks = default_block_count(n)
        ms = bench(widths, args.repeats, args.steps, args.donate, args.warmup)
        adam, lbfgs = ms["optax.adam"], ms["optax.lbfgs (no line search)"]
        print(f"\n{model}: n = {n:,}, mL-BFGS default blocks = {blocks}")
        print("| optimizer | ms/step | x Adam | x L-BFGS |")
        print("|---|---|---|---|")
        for name, value in ms.items():
            print(f"| {name} | {value:.3f} | {value / adam:.2f} | {value / lbfgs:.2f} |")


if __name__ == "__main__":
    main()
