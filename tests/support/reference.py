"""A plain-loop NumPy reference of the step (docs/design.md section 3), written
independently of mlbfgs.

It follows the text step by step (dense Python lists of pairs, the two-loop recursion,
Eq (7) written out again, the step-control options of section 3.7 and the released code's
ways) so that the optimizer's compact form, ring buffer and in-place kernels are checked
against the semantics rather than against themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


def reference_two_loop(
    g: np.ndarray, pairs: Sequence[tuple[np.ndarray, np.ndarray]], gamma: float | None = None
) -> np.ndarray:
    """Algorithm 2 with H_0 = (s^T y / y^T y) I of the newest pair (or gamma I)."""
    q = g.copy()
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        alphas.append(alpha)
        q -= alpha * y
    s_new, y_new = pairs[-1]
    r = ((s_new @ y_new) / (y_new @ y_new) if gamma is None else gamma) * q
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        beta = (y @ r) / (s @ y)
        r += (alpha - beta) * s
    return r


def reference_damp(s, y, tau0, sigma_low, sigma_high):
    mu = (s @ y) / (s @ s)
    if mu <= sigma_low:
        tau = min((1 - sigma_low) / (1 - mu), tau0)
    elif mu >= sigma_high:
        tau = min((sigma_high - 1) / (mu - 1), tau0)
    else:
        tau = tau0
    return tau * y + (1 - tau) * s


@dataclass
class ReferenceConfig:
    lr: float = 0.1
    history_size: int = 10
    update_every: int = 50
    hessian_momentum: float = 0.999
    tau0: float = 0.99
    sigma_low: float = 0.01
    sigma_high: float = 1.5
    damping: bool = True
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup: int | None = None
    step_norm: str = "none"
    pair_momentum: float = 0.0
    averaging: str = "mean"
    restart_grad_average: bool = False
    pair_timing: str = "after_step"
    h0: str = "gamma"
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8


@dataclass
class _Block:
    indices: list[int]
    avg_theta: np.ndarray | None = None
    avg_grad: np.ndarray | None = None
    prev: tuple[np.ndarray, np.ndarray] | None = None
    buffer: np.ndarray | None = None
    m: np.ndarray | None = None
    """h0="adam": the moving average of g, from zero."""
    v: np.ndarray | None = None
    """h0="adam": the moving average of g * g, from zero."""
    m_hat: np.ndarray = field(default_factory=lambda: np.zeros(0))
    v_hat: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def reference_run(
    params: list[np.ndarray],
    gradient: Callable[[int, list[np.ndarray]], list[np.ndarray]],
    steps: int,
    blocks: list[list[int]],
    cfg: ReferenceConfig,
    diagnostics: dict[str, float] | None = None,
) -> tuple[list[np.ndarray], list[list[tuple[np.ndarray, np.ndarray]]]]:
    """Run ``steps`` steps; return the final params and each block's stored pairs.

    ``diagnostics["condition"]`` (when a dict is given) receives the largest condition
    number of H at any preconditioned step (H built column by column, so keep blocks
    small): how much any computation of ``H g`` may magnify its rounding relative to the
    result, which the "gradient", "trust" and "unit" step norms carry into the step's length.
    """
    params = [p.copy() for p in params]
    before = cfg.pair_timing == "before_step"
    first_use = 2 * cfg.update_every - (1 if before else 0)  # the step the first pair is used
    warmup = first_use if cfg.warmup is None else cfg.warmup
    state = [_Block(list(b)) for b in blocks]
    beta = cfg.hessian_momentum
    for t in range(1, steps + 1):
        grads = gradient(t, params)
        thetas, gs, directions = [], [], []
        for block in state:
            theta = np.concatenate([params[i].ravel() for i in block.indices])
            g = np.concatenate([grads[i].ravel() for i in block.indices])
            g = g + cfg.weight_decay * theta
            if block.avg_theta is None:
                block.avg_theta, block.avg_grad = theta.copy(), g.copy()
            elif cfg.averaging == "mean":
                block.avg_theta = beta * block.avg_theta + (1 - beta) * theta
                block.avg_grad = beta * block.avg_grad + (1 - beta) * g
            else:
                block.avg_theta = beta * block.avg_theta + theta
                block.avg_grad = beta * block.avg_grad + g
            if cfg.h0 == "adam":
                beta1, beta2 = cfg.momentum, cfg.adam_beta2
                m, v = (0 * g, 0 * g) if block.m is None else (block.m, block.v)
                block.m, block.v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
                block.m_hat = block.m / (1 - beta1**t)
                block.v_hat = block.v / (1 - beta2**t)
            if before and t % cfg.update_every == 0:
                _form_pair(block, g, cfg)
            preconditioned = t > warmup and bool(block.pairs)
            thetas.append(theta)
            gs.append(g)
            source = g if cfg.h0 == "gamma" else block.m_hat
            d = _h_times(block, source, cfg) if preconditioned else None
            if d is not None and diagnostics is not None:
                h = np.stack([_h_times(block, e, cfg) for e in np.eye(len(g))])
                condition = float(np.linalg.cond(0.5 * (h + h.T)))
                diagnostics["condition"] = max(diagnostics.get("condition", 1.0), condition)
            directions.append(d)
        total = sum(float(d @ d) for d in directions if d is not None)
        for block, theta, g, d in zip(state, thetas, gs, directions, strict=True):
            first_order = g if cfg.h0 == "gamma" else _delta(block, cfg) * block.m_hat
            if d is None:
                d = first_order
            elif cfg.step_norm == "gradient":
                d = d * (np.sqrt(first_order @ first_order) / np.sqrt(d @ d))
            elif cfg.step_norm == "trust":  # only shortens
                d = d * min(1.0, np.sqrt(first_order @ first_order) / np.sqrt(d @ d))
            elif cfg.step_norm == "unit":
                d = d / np.sqrt(total)
            if cfg.momentum and cfg.h0 == "gamma":  # Adam's m is the momentum of "adam"
                block.buffer = d.copy() if block.buffer is None else cfg.momentum * block.buffer + d
                d = block.buffer
            theta_next = theta - cfg.lr * d
            if not before and t % cfg.update_every == 0:
                _form_pair(block, g, cfg)
            offset = 0
            for i in block.indices:
                size = params[i].size
                params[i] = theta_next[offset : offset + size].reshape(params[i].shape)
                offset += size
    return params, [b.pairs for b in state]


def _delta(block: _Block, cfg: ReferenceConfig) -> np.ndarray:
    """h0="adam": the diagonal of H_0, 1 / (sqrt(v^) + eps)."""
    return 1.0 / (np.sqrt(block.v_hat) + cfg.adam_eps)


def _h_times(block: _Block, g: np.ndarray, cfg: ReferenceConfig) -> np.ndarray:
    """H g: the two-loop recursion; with h0="adam" in the coordinates scaled by D^(1/2),
    where the stored pairs live, with H_0 = I there."""
    if cfg.h0 == "gamma":
        return reference_two_loop(g, block.pairs)
    root = np.sqrt(_delta(block, cfg))
    return root * reference_two_loop(root * g, block.pairs, gamma=1.0)


def _form_pair(block: _Block, g: np.ndarray, cfg: ReferenceConfig) -> None:
    """Eq (6), the released code's pair momentum, Eq (7), the ring buffer; then snapshot."""
    if block.prev is not None:
        s = block.avg_theta - block.prev[0]
        y = block.avg_grad - block.prev[1]
        if cfg.h0 == "adam":  # the pair in the coordinates scaled by D^(1/2)
            root = np.sqrt(_delta(block, cfg))
            s, y = s / root, y * root
        if cfg.pair_momentum and block.pairs:
            s_prev, y_prev = block.pairs[-1]
            s = (1 - cfg.pair_momentum) * s + cfg.pair_momentum * s_prev
            y = (1 - cfg.pair_momentum) * y + cfg.pair_momentum * y_prev
        if cfg.damping:
            y_hat = reference_damp(s, y, cfg.tau0, cfg.sigma_low, cfg.sigma_high)
            block.pairs = [*block.pairs, (s, y_hat)][-cfg.history_size :]
        elif s @ y > np.finfo(s.dtype).eps * (s @ s):
            block.pairs = [*block.pairs, (s, y)][-cfg.history_size :]
    block.prev = (block.avg_theta.copy(), block.avg_grad.copy())
    if cfg.restart_grad_average:
        block.avg_grad = g.copy()
