"""The container every loader returns: standardised float32 images and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    """Images as ``(N, C, H, W)`` float32, standardised with the training set's statistics."""

    name: str
    x_train: Images
    y_train: Labels
    x_test: Images
    y_test: Labels
    classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.x_train.shape
        return int(c), int(h), int(w)

    def describe(self) -> str:
        c, h, w = self.image_shape
        return (
            f"{self.name}: {len(self.y_train)} training and {len(self.y_test)} test images, "
            f"{c}x{h}x{w}, {self.classes} classes"
        )

    def limited(self, train: int | None) -> Dataset:
        """The first ``train`` training images (all when None); the test set is kept."""
        if train is None or train >= len(self.y_train):
            return self
        if train < 1:
            raise ValueError(f"train limit must be >= 1, got {train}")
        return Dataset(
            self.name,
            self.x_train[:train],
            self.y_train[:train],
            self.x_test,
            self.y_test,
            self.classes,
        )


def standardise(
    name: str,
    x_train: npt.NDArray[np.generic],
    y_train: npt.NDArray[np.generic],
    x_test: npt.NDArray[np.generic],
    y_test: npt.NDArray[np.generic],
) -> Dataset:
    """Scale to zero mean and unit variance per channel, using training statistics only."""
    if x_train.ndim != 4 or x_test.ndim != 4 or x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"images must be (N, C, H, W) with equal C, H, W; got {x_train.shape}, {x_test.shape}"
        )
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"{name}: image and label counts differ")
    train = np.asarray(x_train, dtype=np.float64)
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    std[std == 0.0] = 1.0

    def scale(x: npt.NDArray[np.generic]) -> Images:
        return np.ascontiguousarray(((np.asarray(x, np.float64) - mean) / std).astype(np.float32))

    labels = np.concatenate([np.asarray(y_train), np.asarray(y_test)]).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0")
    return Dataset(
        name,
        scale(x_train),
        np.asarray(y_train, dtype=np.int64),
        scale(x_test),
        np.asarray(y_test, dtype=np.int64),
        classes=int(labels.max()) + 1 if labels.size else 0,
    )


def split_indices(
    y: npt.NDArray[np.generic], test_fraction: float = 0.2, seed: int = 0
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Training and test indices of a seeded, class-stratified split (training shuffled,
    test in order): what ``split`` uses, for callers that scale the images their own way."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(y, dtype=np.int64)
    test_idx = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_idx.append(members[: int(np.floor(test_fraction * len(members) + 0.5))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    return rng.permutation(np.flatnonzero(~is_test)), np.flatnonzero(is_test)


def split(
    name: str,
    x: npt.NDArray[np.generic],
    y: npt.NDArray[np.generic],
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """A seeded, class-stratified train/test split of one labelled set, then standardised."""
    train_idx, test_idx = split_indices(y, test_fraction, seed)
    labels = np.asarray(y, dtype=np.int64)
    return standardise(name, x[train_idx], labels[train_idx], x[test_idx], labels[test_idx])
