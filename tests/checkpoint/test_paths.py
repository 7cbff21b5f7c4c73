"""Checkpoints touch only their own files: a manifest cannot point outside its set, and
removing old sets deletes only what mlbfgs wrote, following no link."""

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
    opt = mlbfgs.MLBFGS(values, history_size=2, update_every=2, lr=0.1)
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


# -- removing old sets: only what mlbfgs wrote, no link followed ------------------------------


@pytest.mark.parametrize("committed", [True, False])
def test_a_linked_old_set_keeps_every_file_of_its_target(tmp_path: Path, committed: bool) -> None:
    elsewhere = save_sharded(trained(3)[1], tmp_path / "elsewhere")
    (elsewhere / "notes.txt").write_text("mine")
    if not committed:
        (elsewhere / "manifest.json").unlink()
    kept = files(elsewhere)
    root = tmp_path / "ckpt"
    root.mkdir()
    link = root / "ckpt-000001-step000000003"
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.warns(UserWarning, match=re.escape(f"{link} is a link out of {root}")):
        new = save_sharded(trained(4)[1], root)
    assert files(elsewhere) == kept
    assert sorted(p.name for p in root.iterdir()) == [link.name, new.name]
    assert link.is_symlink()


def test_a_linked_old_set_inside_the_root_loses_only_the_link(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    stash = root / "stash"
    shutil.copytree(save_sharded(trained(3)[1], tmp_path / "source"), stash)
    kept = files(stash)
    link = root / "ckpt-000001-step000000003"
    link.symlink_to(stash, target_is_directory=True)
    with no_warnings():
        new = save_sharded(trained(4)[1], root)
    assert sorted(p.name for p in root.iterdir()) == [new.name, "stash"]
    assert files(stash) == kept


@pytest.mark.parametrize(
    ("committed", "foreign"),
    [
        (True, ["mlbfgs-rank00001-of-00002.npz", "notes.txt", "results"]),
        (False, ["notes.txt", "results"]),
    ],
)
def test_foreign_files_in_an_old_set_survive_and_are_named(
    tmp_path: Path, committed: bool, foreign: list[str]
) -> None:
    """A committed set loses the files its manifest lists (a per-rank name it does not
    list is foreign); an uncommitted one, every name mlbfgs writes."""
    old = save_sharded(trained(3)[1], tmp_path)
    (old / "notes.txt").write_text("mine")
    (old / "results").mkdir()
    (old / "results" / "loss.csv").write_text("1.0\n")
    (old / "mlbfgs-rank00001-of-00002.npz").write_bytes(b"other")
    (old / f"{SHARD}.partial").write_bytes(b"half")  # a save's leftovers
    (old / "manifest.json.partial").write_text("{")
    if not committed:
        (old / "manifest.json").unlink()
    kept = {name: data for name, data in files(old).items() if name.split("/")[0] in foreign}
    with pytest.warns(UserWarning, match=re.escape(f"{old}: kept {foreign}, not written")):
        new = save_sharded(trained(4)[1], tmp_path)
    assert files(old) == kept
    assert sorted(p.name for p in old.iterdir()) == foreign
    # Once the user has moved their files, the next save removes the directory.
    shutil.rmtree(old / "results")
    for name in foreign[:-1]:
        (old / name).unlink()
    with no_warnings():
        assert save_sharded(trained(5)[1], tmp_path, keep=2).name == "ckpt-000003-step000000005"
    assert sorted(p.name for p in tmp_path.iterdir()) == [new.name, "ckpt-000003-step000000005"]


@pytest.mark.parametrize("inside", [True, False])
def test_a_linked_file_in_an_old_set_loses_at_most_the_link(tmp_path: Path, inside: bool) -> None:
    root = tmp_path / "ckpt"
    old = save_sharded(trained(3)[1], root)
    target = (root if inside else tmp_path) / "shared" / SHARD
    target.parent.mkdir()
    (old / SHARD).replace(target)
    (old / SHARD).symlink_to(target)
    data = target.read_bytes()
    if inside:
        with no_warnings():
            save_sharded(trained(4)[1], root)
        assert not old.exists()
    else:
        message = f"{old}: kept links [{SHARD!r}] out of {root}, not followed"
        with pytest.warns(UserWarning, match=re.escape(message)):
            save_sharded(trained(4)[1], root)
        assert [p.name for p in old.iterdir()] == [SHARD] and (old / SHARD).is_symlink()
    assert target.read_bytes() == data


def test_an_old_set_whose_manifest_links_out_of_the_root_stays_whole(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    old = save_sharded(trained(3)[1], root)
    manifest = tmp_path / "manifest.json"
    (old / "manifest.json").replace(manifest)
    (old / "manifest.json").symlink_to(manifest)
    kept = files(old)
    with pytest.warns(UserWarning, match=re.escape(f"{old}: its manifest.json is a link out")):
        save_sharded(trained(4)[1], root)
    assert files(old) == kept and manifest.is_file()
    assert load_sharded(trained(1)[1], old) == old  # still committed, still complete


def test_cleanup_never_follows_a_manifest_out_of_its_set(tmp_path: Path) -> None:
    """A manifest naming another file is not read for cleanup either: the set's own
    files go by their names, the other file stays."""
    root = tmp_path / "ckpt"
    old = save_sharded(trained(3)[1], root)
    victim = tmp_path / "victim.npz"
    shutil.copy(old / SHARD, victim)
    set_manifest(old, {"../../victim.npz": victim.stat().st_size})
    with no_warnings():
        new = save_sharded(trained(4)[1], root)
    assert victim.is_file()
    assert [p.name for p in root.iterdir()] == [new.name]
