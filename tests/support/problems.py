"""Small deterministic problems shared by the tests."""

from __future__ import annotations

import numpy as np


def spd_matrix(n: int, seed: int, condition: float = 20.0) -> np.ndarray:
    """A random symmetric positive definite matrix with the given condition number."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.geomspace(1.0, condition, n)) @ q.T


class NoisyQuadratic:
    """``L = 0.5 theta^T B theta`` with gradients ``B theta + noise`` (noise fixed per step)."""

    def __init__(self, shapes: list[tuple[int, ...]], seed: int = 0, noise: float = 0.0):
        self.shapes = shapes
        self.sizes = [int(np.prod(s)) for s in shapes]
        self.n = sum(self.sizes)
        self.hessian = spd_matrix(self.n, seed)
        self.noise = noise
        self.seed = seed

    def initial(self, dtype: type = np.float64) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + 1)
        return [rng.standard_normal(s).astype(dtype) for s in self.shapes]

    def gradient(self, t: int, params: list[np.ndarray]) -> list[np.ndarray]:
        theta = np.concatenate([p.ravel() for p in params]).astype(np.float64)
        g = self.hessian @ theta
        if self.noise:
            g += self.noise * np.random.default_rng([self.seed, t]).standard_normal(self.n)
        out, offset = [], 0
        for shape, size, p in zip(self.shapes, self.sizes, params, strict=True):
            out.append(g[offset : offset + size].reshape(shape).astype(p.dtype))
            offset += size
        return out

    def loss(self, params: list[np.ndarray]) -> float:
        theta = np.concatenate([p.ravel() for p in params]).astype(np.float64)
        return 0.5 * float(theta @ self.hessian @ theta)
