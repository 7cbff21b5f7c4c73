"""Checkpoints touch only their own files: a manifest cannot point outside its set."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_unchanged, snapshot

import mlbfgs
from mlbfgs.checkpoint import CheckpointError, ShardedState, load_sharded, save_sharded

SHARD = "mlbfgs-rank00000-of-00001.npz"


def params() -> list[np.ndarray]:
    return [np.arange(5.0), np.linspace(-1.0, 1.0, 3)]


def trained(steps: int) -> tuple[list[np.ndarray], mlbfgs.MLBFGS]:
    values = params()
    opt = mlbfgs.MLBFGS(values, history=2, update_every=2, lr=0.1)
    for t in range(1, steps + 1):
        opt.step([t * p + 1.0 for p in values])
    return values, opt


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (through links) with its content."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def set_manifest(folder: Path, listed: dict[str, int]) -> Path:
    manifest = folder / "manifest.json"
    content = json.loads(manifest.read_text())
    content["files"] = listed
    manifest.write_text(json.dumps(content))
    return manifest


@contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- loading: a manifest names only per-rank files of its own set -----------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "../../outside.npz",  # up, out of the set and of its root
        f"../{SHARD}",  # a per-rank name, one directory up
        "/ABSOLUTE/outside.npz",  # an absolute path (made real under tmp_path below)
        f"sub/{SHARD}",  # a separator
        "notes.txt",  # an unknown name inside the set
        f"{SHARD}.partial",  # a temporary name
        f"{SHARD}\n",  # a per-rank name and a newline, which "$" would accept
        "mlbfgs-rank\u0660-of-\u0661.npz",  # Arabic-Indic digits, which "\d" would accept
    ],
)
def test_a_manifest_naming_another_file_is_refused_before_any_file_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    root = tmp_path / "ckpt"
    folder = save_sharded(trained(4)[1], root)
    if entry.startswith("/ABSOLUTE/"):
        entry = str(tmp_path / "elsewhere" / "outside.npz")
    # A valid per-rank file where the entry points: before, it loaded.
    decoy = folder / entry
    decoy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / SHARD, decoy)
    size = decoy.stat().st_size
    manifest = set_manifest(folder, {SHARD: size, entry: size})

    opened: list[str] = []
    load = np.load
    monkeypatch.setattr(np, "load", lambda path, **kw: opened.append(str(path)) or load(path, **kw))
    values, opt = trained(1)
    before = snapshot(values, opt)
    named = rf"{re.escape(str(manifest))} lists \[{re.escape(repr(entry))}\]"
    with pytest.raises(CheckpointError, match=named):
        load_sharded(opt, root)
    with pytest.raises(CheckpointError, match=named):
        ShardedState(folder)
    assert opened == []
    assert_unchanged(before, values, opt)


@pytest.mark.parametrize(
    "listed", [[[SHARD, 100]], [[1, 2]], None], ids=["pairs", "numbers", "null"]
)
def test_a_manifest_whose_files_are_not_an_object_is_refused(
    tmp_path: Path, listed: object
) -> None:
    folder = save_sharded(trained(2)[1], tmp_path)
    manifest = folder / "manifest.json"
    content = json.loads(manifest.read_text())
    content["files"] = listed
    manifest.write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(manifest))} is not a readable"):
        ShardedState(folder)


def test_flat_per_rank_files_are_neither_loaded_nor_removed(tmp_path: Path) -> None:
    """Per-rank files straight in the directory are not a checkpoint (that layout was
    never released); they are left where they are."""
    source = save_sharded(trained(3)[1], tmp_path / "source")
    root = tmp_path / "ckpt"
    root.mkdir()
    shutil.copy(source / SHARD, root / SHARD)
    values, opt = trained(1)
    with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
        load_sharded(opt, root)
    with no_warnings():
        new = save_sharded(opt, root)
    assert sorted(p.name for p in root.iterdir()) == [new.name, SHARD]
