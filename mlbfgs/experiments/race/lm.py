"""``lm-char``: a small causal transformer trained on characters of real English text.

The text is the one every Python installation carries: the standard library's
``pydoc_data.topics`` (the reference manual's topics that ``help()`` prints, ~465 kB of
English prose with code), its topics joined in sorted order. Nothing is downloaded.
scikit-learn's dataset descriptions (~43 kB) were the alternative, but at this budget
(2000 steps x 32 windows x 64 characters = 4.1M characters) a model would see them ~100
times over; here it sees the training text ~10 times. The text is fixed by the Python
version (3.11 here), so the header prints its size and a hash.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache

import numpy as np
import torch
from torch import nn

from ..convergence.tasks import Problem, seeded
from ..schedule import batch_order

CONTEXT = 64
WIDTH = 64
HEADS = 4
LAYERS = 2
BATCH = 32
TRAIN_WINDOWS = 64
"""Fixed training windows, evenly spaced over the training text, for the metric."""
VALIDATION_FRACTION = 0.1


@cache
def corpus() -> tuple[str, str]:
    """The text and its characters in sorted order (the vocabulary)."""
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    return text, "".join(sorted(set(text)))


def describe_corpus() -> str:
    text, vocabulary = corpus()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"pydoc_data.topics, {len(text)} characters, {len(vocabulary)} distinct, sha256 {digest}"


@cache
def _encoded() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Training and validation characters as int64 codes (the last 10% held out)."""
    text, vocabulary = corpus()
    lookup = {c: i for i, c in enumerate(vocabulary)}
    codes = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    cut = len(codes) - math.ceil(VALIDATION_FRACTION * len(codes))
    return codes[:cut], codes[cut:], len(vocabulary)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a 4x GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.down(nn.functional.gelu(self.up(self.norm2(x))))


class CharTransformer(nn.Module):
    """Token and learned position embeddings, pre-LN blocks, a final LayerNorm and an
    untied output head (registered last, so it is the model's last ``nn.Linear``).

    Initialised as nanoGPT does: N(0, 0.02) weights, zero biases, and the residual
    projections at 0.02 / sqrt(2 x layers).
    """

    def __init__(self, vocabulary: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, WIDTH)
        self.position = nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList(Block(WIDTH, HEADS) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, vocabulary)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim == 2:
                residual = name.endswith(("proj.weight", "down.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * LAYERS) if residual else 0.02)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.embed(codes) + self.position.weight[: codes.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class CharLM(Problem):
    """Mini-batches of 32 windows at seeded random offsets of the training text; the metric
    is the mean next-character cross-entropy on 64 fixed training windows."""

    def __init__(self, seed: int, iterations: int) -> None:
        self.train_codes, self.validation_codes, vocabulary = _encoded()
        self.model = seeded(seed, lambda: CharTransformer(vocabulary), torch.float32)
        self.params = list(self.model.parameters())
        windows = len(self.train_codes) - CONTEXT
        order = batch_order(windows, BATCH, iterations, seed)
        self.starts = torch.as_tensor(np.asarray(order, dtype=np.int64))
        self.fixed = torch.as_tensor(np.linspace(0, windows - 1, TRAIN_WINDOWS).astype(np.int64))
        self.offsets = torch.arange(CONTEXT + 1)

    def _loss(self, codes: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        windows = codes[starts[:, None] + self.offsets]
        logits = self.model(windows[:, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())

    def batch_loss(self, t: int) -> torch.Tensor:
        return self._loss(self.train_codes, self.starts[t - 1])

    @torch.no_grad()
    def train_loss(self) -> float:
        return float(self._loss(self.train_codes, self.fixed))

    @torch.no_grad()
    def held_out(self) -> float:
        """Validation loss: every non-overlapping window of the held-out text."""
        starts = torch.arange(0, len(self.validation_codes) - CONTEXT, CONTEXT + 1)
        return float(self._loss(self.validation_codes, starts))
