"""Readers for the standard on-disk formats: CIFAR-10 python batches and MNIST idx files.

CIFAR-10's python batches are pickles; they are read with an unpickler that only admits
the handful of NumPy names an array needs, so a hostile file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .dataset import Dataset, standardise

_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class _ArrayUnpickler(pickle.Unpickler):
    """Admits dicts, lists, bytes, numbers and NumPy arrays; refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _open_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path: str | Path) -> npt.NDArray[Any]:
    """One idx file (optionally gzip-compressed) as a native-endian array."""
    path = Path(path)
    data = _open_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: idx header says shape {shape} ({expected} bytes), file has "
            f"{len(data) - header} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / candidate).is_file():
            return directory / candidate
    raise FileNotFoundError(f"{directory} has no {stem}[.gz]")


def load_mnist_idx(directory: str | Path, name: str = "mnist") -> Dataset:
    """MNIST (or Fashion-MNIST) from the four idx files in ``directory``."""
    directory = Path(directory)
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in MNIST_FILES.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3:
            raise ValueError(f"{key}: expected (N, H, W) images, got shape {arrays[key].shape}")
        arrays[key] = arrays[key][:, None, :, :].astype(np.float32) / 255.0
    return standardise(
        name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    )


def read_cifar_batch(path: str | Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """One CIFAR-10 python batch as ``(N, 3, 32, 32)`` uint8 images and int64 labels."""
    path = Path(path)
    try:
        batch = _ArrayUnpickler(io.BytesIO(_open_bytes(path)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {error}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path} lacks 'data' or 'labels'")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(directory: str | Path) -> Dataset:
    """CIFAR-10 from ``data_batch_1..5`` and ``test_batch`` (python version) in ``directory``.

    Missing training batches are allowed (at least one must exist); ``test_batch`` is needed.
    """
    directory = Path(directory)
    train = [read_cifar_batch(directory / n) for n in CIFAR_TRAIN if (directory / n).is_file()]
    if not train:
        raise FileNotFoundError(f"{directory} has no CIFAR-10 data_batch_* file")
    if not (directory / CIFAR_TEST).is_file():
        raise FileNotFoundError(f"{directory} has no CIFAR-10 {CIFAR_TEST}")
    x_test, y_test = read_cifar_batch(directory / CIFAR_TEST)
    x_train = np.concatenate([x for x, _ in train]).astype(np.float32) / 255.0
    y_train = np.concatenate([y for _, y in train])
    return standardise("cifar10", x_train, y_train, x_test.astype(np.float32) / 255.0, y_test)


def load_dir(directory: str | Path) -> Dataset:
    """Whichever known format ``directory`` holds (also its ``cifar-10-batches-py`` child)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--data-dir {directory} is not a directory")
    for candidate in (directory, directory / "cifar-10-batches-py"):
        if any((candidate / n).is_file() for n in CIFAR_TRAIN):
            return load_cifar10(candidate)
    for candidate in (directory, directory / "MNIST" / "raw", directory / "raw"):
        try:
            _find(candidate, MNIST_FILES["x_train"])
        except FileNotFoundError:
            continue
        return load_mnist_idx(candidate)
    raise FileNotFoundError(
        f"{directory} holds neither CIFAR-10 python batches (data_batch_1, ..., test_batch) "
        "nor MNIST idx files (train-images-idx3-ubyte, ...)"
    )
