"""Fingerprint of the step's results, for changes that must not change any: run it before
and after, and compare the two lines it prints.

Every combination of the step's discrete options (192: damping, pair momentum, ``h0``,
pair timing, averaging, gradient restart, step norm) runs 25 steps of a noisy quadratic
with a skipped (NaN) step, on the engine with NumPy float64 and float32, torch float32
and bfloat16 and a float16 history, and on the pure step (``core/functional.py``, NumPy
float64). One SHA-256 covers the engine's parameters, state dicts and ``stats()``, one
the pure step's parameters and state. About 15 s.

    .venv/bin/python scripts/trajectory_hash.py
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import numpy as np
import torch

import mlbfgs
from mlbfgs.backends import kernels_for
from mlbfgs.core import MLBFGSConfig
from mlbfgs.core import functional as pure
from mlbfgs.core.pieces import resolve_blocks
from mlbfgs.engine.layout import BlockLayout

SHAPES = [(5, 4), (7,), (3, 3)]
STEPS = 25
SKIPPED = 7  # the step whose gradient of one parameter is NaN
ENGINES: list[tuple[str, Any, str | None]] = [  # (library, dtype, history_dtype)
    ("numpy", np.float64, None),
    ("numpy", np.float32, None),
    ("torch", torch.float32, None),
    ("torch", torch.bfloat16, None),
    ("numpy", np.float32, "float16"),
]


def configurations() -> list[dict[str, Any]]:
    choices = itertools.product(
        [True, False],
        [0.0, 0.5],
        ["gamma", "adam"],
        ["after_step", "before_step"],
        ["mean", "sum"],
        [False, True],
        ["none", "gradient", "unit"],
    )
    return [
        dict(
            damping=damping, pair_momentum=mix, h0=h0, pair_timing=timing, averaging=averaging,
            restart_grad_average=restart, step_norm=norm, history_size=3, update_every=2,
            hessian_momentum=0.9, momentum=0.9, weight_decay=0.01, warmup=1,
        )
        for damping, mix, h0, timing, averaging, restart, norm in choices
    ]  # fmt: skip


def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return np.ascontiguousarray(np.asarray(value))


Problem = tuple[list[np.ndarray], list[np.ndarray], list[list[np.ndarray]]]


def problem(seed: int) -> Problem:
    """The start, the curvature and each step's noise of a noisy diagonal quadratic."""
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s) for s in SHAPES]
    curvature = [rng.uniform(0.2, 3.0, s) for s in SHAPES]
    return start, curvature, [[0.3 * rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]


def gradients(quadratic: Problem, params: list[np.ndarray], t: int) -> list[np.ndarray]:
    _, curvature, noise = quadratic
    grads = [c * p + e for c, p, e in zip(curvature, params, noise[t], strict=True)]
    if t == SKIPPED:
        grads[1] = grads[1] * np.nan
    return grads


def engine_run(options: dict[str, Any], quadratic: Problem, digest: Any) -> None:
    start = quadratic[0]
    for library, dtype, history in ENGINES:
        params: list[Any] = [
            p.astype(dtype) if library == "numpy" else torch.tensor(p, dtype=dtype) for p in start
        ]
        extra: dict[str, Any] = {} if history is None else {"history_dtype": history}
        opt = mlbfgs.MLBFGS(params, lr=0.1, blocks=2, **options, **extra)
        for t in range(STEPS):
            grads = gradients(quadratic, [as_numpy(p) for p in params], t)
            if library == "numpy":
                opt.step([g.astype(dtype) for g in grads])
            else:
                opt.step([torch.tensor(g).to(dtype) for g in grads])
        for p in params:
            digest.update(as_numpy(p).tobytes())
        state = opt.state_dict()
        for key in sorted(state):
            value = state[key]
            if hasattr(value, "shape"):
                digest.update(key.encode() + as_numpy(value).tobytes())
            else:
                digest.update((key + repr(value)).encode())
        digest.update(repr(opt.stats()).encode())


def pure_run(options: dict[str, Any], quadratic: Problem, digest: Any) -> None:
    config, kernels = MLBFGSConfig(**options), kernels_for(np)
    params = [p.copy() for p in quadratic[0]]
    partition = resolve_blocks(2, [p.size for p in params], 1)
    layouts = [BlockLayout.of(b, pieces, params) for b, pieces in enumerate(partition)]

    def gather(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [layout.gather(np, arrays) for layout in layouts]

    state = pure.init(np, gather(params), config, np.float64)
    for t in range(STEPS):
        grads = gradients(quadratic, params, t)
        updates, state = pure.step(state, gather(params), gather(grads), 0.1, config, kernels)
        for layout, update in zip(layouts, updates, strict=True):
            layout.scatter(np, layout.gather(np, params) + update, params)
    for p in params:
        digest.update(p.tobytes())
    for block in state.blocks:
        for value in block:
            digest.update(np.asarray(value).tobytes())


def main() -> None:
    engine, pure_step = hashlib.sha256(), hashlib.sha256()
    for seed, options in enumerate(configurations()):
        quadratic = problem(seed)
        engine_run(options, quadratic, engine)
        pure_run(options, quadratic, pure_step)
    print(f"engine     {engine.hexdigest()}")
    print(f"pure step  {pure_step.hexdigest()}")


if __name__ == "__main__":
    main()
