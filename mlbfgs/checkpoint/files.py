"""The on-disk layout of sharded checkpoints: names, durability, and reading a set back.

Every failure to read names the file (a truncated or missing file, a damaged member). A
set is read only through its manifest, and a manifest may name only per-rank files of its
own directory, so no manifest makes mlbfgs read (or, in cleanup, delete) another file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Matched with fullmatch, ASCII digits only: "$" would accept a trailing newline, and "\d"
# other scripts' digits, names mlbfgs never writes.
MANIFEST = "manifest.json"
SET_DIRECTORY = re.compile(r"ckpt-(\d{6,})-step(\d+)", re.ASCII)
SHARD_FILE = re.compile(r"mlbfgs-rank(\d+)-of-(\d+)\.npz", re.ASCII)
PARTIAL = ".partial"  # a file being written; renamed to its final name once durable
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message names the file or rank."""


def shard_name(rank: int, size: int) -> str:
    return f"mlbfgs-rank{rank:05d}-of-{size:05d}.npz"


def is_own_file(name: str) -> bool:
    """Whether mlbfgs may have written a file ``name`` into a set directory: a per-rank
    file, the manifest, or either under its temporary name."""
    final = name.removesuffix(PARTIAL)
    return final == MANIFEST or SHARD_FILE.fullmatch(final) is not None


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:  # some file systems cannot fsync a directory
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def set_directories(root: Path) -> list[tuple[int, Path]]:
    """``(sequence, path)`` of every set directory under ``root``, committed or not."""
    if not root.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := SET_DIRECTORY.fullmatch(path.name)) and path.is_dir()
    ]
    return sorted(found)


def committed_sets(root: Path) -> list[tuple[int, Path]]:
    """The committed sets under ``root`` (those with a manifest), newest first."""
    return [(seq, path) for seq, path in reversed(set_directories(root)) if _committed(path)]


def _committed(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def find_checkpoint(directory: str | os.PathLike[str]) -> Path:
    """The set to load: ``directory`` itself if it is a committed set, else the newest
    committed set in it."""
    folder = Path(directory)
    if _committed(folder):
        return folder
    sets = committed_sets(folder)
    if sets:
        return sets[0][1]
    pending = [path.name for _, path in set_directories(folder)]
    hint = f" (uncommitted sets, left by saves that did not finish: {pending})" if pending else ""
    raise FileNotFoundError(
        f"{folder} holds no committed checkpoint written by mlbfgs.checkpoint.save_sharded" + hint
    )


class ShardedState(Mapping[str, Any]):
    """The union of a set's per-rank files, read lazily: a key is read when looked up."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        folder = Path(directory)
        paths, step = _listed(folder / MANIFEST)
        self._paths = paths
        self._files: list[Any] = []
        try:
            for path in paths:
                try:
                    self._files.append(np.load(path, allow_pickle=False))
                except FileNotFoundError:
                    raise
                except _READ_ERRORS as error:
                    raise CheckpointError(f"{path} is not a readable .npz file: {error}") from None
            self._where: dict[str, int] = {}
            for index, file in enumerate(self._files):
                for key in file.files:
                    self._where.setdefault(key, index)
            steps = {int(self._read(index, "step")) for index in range(len(paths))}
        except BaseException:
            self.close()
            raise
        if steps != {step}:
            self.close()
            raise CheckpointError(
                f"the per-rank files in {folder} are from steps {sorted(steps)}, "
                f"the manifest says {step}"
            )

    def _read(self, index: int, key: str) -> Any:
        try:
            return self._files[index][key]
        except KeyError:
            raise
        except _READ_ERRORS as error:
            raise CheckpointError(f"{self._paths[index]}: cannot read {key!r}: {error}") from None

    def __getitem__(self, key: str) -> Any:
        return self._read(self._where[key], key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for file in self._files:
            file.close()


def read_manifest(manifest: Path) -> tuple[dict[str, Any], int]:
    """The per-rank files a manifest lists (name: size in bytes) and its step.

    Every name must be a per-rank file name of the manifest's own directory; a manifest
    naming anything else (``../x.npz``, ``/tmp/x.npz``, ``sub/x.npz``, ``notes.txt``) is
    refused before any listed file is opened, so a manifest cannot make mlbfgs read or
    delete a file outside its set."""
    try:
        content = json.loads(manifest.read_text())
        files, step = content["files"], int(content["step"])
        if not isinstance(files, dict):  # a JSON object: its names are strings
            raise TypeError(f"'files' is a {type(files).__name__}, not an object")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest} is not a readable manifest: {error!r}") from None
    foreign = sorted(name for name in files if SHARD_FILE.fullmatch(name) is None)
    if foreign:
        raise CheckpointError(
            f"{manifest} lists {foreign}, not per-rank file names of its set "
            "(mlbfgs-rank<r>-of-<p>.npz, without a directory): refusing to read them"
        )
    return files, step


def _listed(manifest: Path) -> tuple[list[Path], int]:
    """The files a manifest lists (each present with the size it records), and its step."""
    files, step = read_manifest(manifest)
    paths = []
    for name, size in sorted(files.items()):
        path = manifest.parent / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (listed in {manifest})")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"{path} has {actual} bytes, {manifest} says {size} (truncated or replaced?)"
            )
        paths.append(path)
    return paths, step
