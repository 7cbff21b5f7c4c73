"""A one-hidden-layer MLP in plain NumPy (float32), forward and backward by hand.

Used by the ablation (``reproduce ablation``) and by ``examples/numpy_mlp.py``: a model
for training loops that have no torch at all.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


class NumpyMLP:
    """``softmax(W2 tanh(W1 x + b1) + b2)`` with cross-entropy; forward and backward by hand."""

    def __init__(self, inputs: int, hidden: int, classes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params: list[Array] = [
            (rng.normal(0, 1 / math.sqrt(inputs), (inputs, hidden))).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.normal(0, 1 / math.sqrt(hidden), (hidden, classes))).astype(np.float32),
            np.zeros(classes, np.float32),
        ]

    def loss_and_grads(self, x: Array, y: npt.NDArray[np.int64]) -> tuple[float, list[Array]]:
        w1, b1, w2, b2 = self.params
        h = np.tanh(x @ w1 + b1)
        logits = h @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -float(np.mean(np.log(p[np.arange(n), y] + 1e-30)))
        d_logits = p
        d_logits[np.arange(n), y] -= 1.0
        d_logits /= n
        d_h = (d_logits @ w2.T) * (1.0 - h * h)
        grads = [x.T @ d_h, d_h.sum(axis=0), h.T @ d_logits, d_logits.sum(axis=0)]
        return loss, [g.astype(np.float32) for g in grads]

    def loss(self, x: Array, y: npt.NDArray[np.int64]) -> float:
        return self.loss_and_grads(x, y)[0]

    def accuracy(self, x: Array, y: npt.NDArray[np.int64]) -> float:
        w1, b1, w2, b2 = self.params
        return float(((np.tanh(x @ w1 + b1) @ w2 + b2).argmax(axis=1) == y).mean())
