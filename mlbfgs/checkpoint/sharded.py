"""Sharded checkpoints that survive a crash at any moment: saved as a set, committed at once.

Every rank writes only its own blocks (no rank gathers the whole history), into a new
directory per save; rank 0 commits the set by writing ``manifest.json`` after every rank
has written and flushed its file, and only then removes older sets::

    ckpt/
      ckpt-000007-step000001200/            the 7th save into ckpt/, at step 1200
        mlbfgs-rank00000-of-00004.npz       one file per rank (numpy.savez, no pickles)
        ...
        manifest.json                       the commit: the files, their sizes, the step
      ckpt-000006-step000001000/            older sets: the newest ``keep`` stay

Files and directories are fsynced before each step that depends on them, so a set whose
manifest exists is complete on disk. A crash before the commit leaves an uncommitted set
(ignored by :func:`load_sharded`, removed by the next save); a crash after it leaves the
new set committed, and a crash while old sets are removed leaves them uncommitted (their
manifest goes first). Hence the newest committed set always loads, whichever rank dies
at whatever point. Removing a set deletes only what mlbfgs wrote there and follows no
link. ``docs/reliability.md`` states the guarantees.

:func:`load_sharded` reads such a directory on any number of ranks, each rank reading
only the blocks it is assigned. All ranks must see one shared file system.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from array_api_compat import is_array_api_obj

from ..backends import backend_of
from ..comm import Communicator
from ..core.config import is_count
from ..engine.distributed import together
from .files import (
    MANIFEST,
    PARTIAL,
    CheckpointError,
    ShardedState,
    committed_sets,
    find_checkpoint,
    fsync_directory,
    is_own_file,
    read_manifest,
    set_directories,
    shard_name,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from ..engine import MLBFGS

__all__ = ["load_sharded", "save_sharded"]

MANIFEST_VERSION = 1


def _reached(point: str, rank: int, path: Path) -> None:
    """A named point of a save (``before_write``, ``mid_commit``, ...): does nothing. The
    fault tests replace this function to make a rank die there (tests/checkpoint/)."""


def save_sharded(optimizer: MLBFGS, directory: str | os.PathLike[str], keep: int = 1) -> Path:
    """Save the optimizer as a new checkpoint set under ``directory``; return the set's path.

    Call on every rank; each writes its own blocks. Returns once the set is committed,
    after the older sets beyond the newest ``keep`` were removed. If any rank fails (a
    full disk, say), every rank raises :class:`CheckpointError` and no set is committed.
    """
    if not is_count(keep) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    comm = optimizer.comm
    root, rank = Path(directory), comm.rank
    state = {key: _to_numpy(value) for key, value in optimizer.state_dict().items()}
    state["owned_blocks"] = np.asarray(state["owned_blocks"], dtype=np.int64)
    step = int(state["step"])

    name = _together(comm, "create the set", lambda: _new_set(root, step) if rank == 0 else "")[0]
    folder = root / name
    file = shard_name(rank, comm.size)
    sizes = _together(comm, "write", lambda: _write_shard(folder / file, state, rank))
    files = {shard_name(r, comm.size): size for r, size in enumerate(sizes)}
    manifest = {
        "format": "mlbfgs-sharded-checkpoint",
        "version": MANIFEST_VERSION,
        "step": step,
        "world_size": comm.size,
        "files": files,
    }
    _together(comm, "commit", lambda: _commit(folder, manifest, int(keep)) if rank == 0 else None)
    return folder


def load_sharded(optimizer: MLBFGS, directory: str | os.PathLike[str]) -> Path:
    """Load the newest committed set under ``directory`` (or the set ``directory`` itself);
    return the set's path.

    Call on every rank, with any world size: each rank reads only the blocks it owns. An
    optimizer built with ``blocks=None`` adopts the saved blocks, so a run saved on p
    ranks continues on q ranks with the same trajectory. Every rank checks what it read
    before any rank changes: an error anywhere raises on every rank, and then no
    optimizer changed.
    """
    comm = optimizer.comm
    found = _together(
        comm, "find", lambda: str(find_checkpoint(directory)) if comm.rank == 0 else ""
    )
    folder = Path(found[0])
    loaded: Any = None

    def read() -> None:
        nonlocal loaded
        state = ShardedState(folder)
        try:
            loaded = optimizer.check_state(state)
        finally:
            state.close()

    _together(comm, "load", read)
    optimizer.adopt_state(loaded)
    return folder


def _together(comm: Communicator, what: str, action: Callable[[], T]) -> list[T]:
    """``action`` on every rank; if it failed anywhere, every rank raises."""
    return together(comm, action, CheckpointError, f"checkpoint {what} failed")


def _new_set(root: Path, step: int) -> str:
    """Create the next set's directory (rank 0) and return its name."""
    existed = root.is_dir()
    root.mkdir(parents=True, exist_ok=True)
    if not existed:
        fsync_directory(root.parent)
    sequence = 1 + max((seq for seq, _ in set_directories(root)), default=0)
    name = f"ckpt-{sequence:06d}-step{step:09d}"
    (root / name).mkdir()
    fsync_directory(root)
    return name


def _write_shard(path: Path, state: dict[str, Any], rank: int) -> int:
    """Write this rank's file durably under its final name; return its size in bytes."""
    _reached("before_write", rank, path)
    partial = path.with_name(path.name + PARTIAL)
    with open(partial, "wb") as stream:
        np.savez(stream, **state)
        stream.flush()
        os.fsync(stream.fileno())
    _reached("mid_write", rank, partial)
    os.replace(partial, path)
    fsync_directory(path.parent)
    _reached("after_write", rank, path)
    return path.stat().st_size


def _commit(folder: Path, manifest: dict[str, Any], keep: int) -> None:
    """Rank 0, once every file is on disk: write the manifest, then remove old sets."""
    _reached("before_commit", 0, folder)
    partial = folder / (MANIFEST + PARTIAL)
    with open(partial, "w") as stream:
        json.dump(manifest, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    _reached("mid_commit", 0, partial)
    os.replace(partial, folder / MANIFEST)
    fsync_directory(folder)
    _reached("after_commit", 0, folder)
    try:
        kept = _remove_old(folder.parent, folder, keep)
    except OSError as error:  # the new set is committed; leftovers go at the next save
        warnings.warn(f"could not remove old checkpoints in {folder.parent}: {error}", stacklevel=3)
        return
    if kept:
        warnings.warn("old checkpoints partly kept: " + "; ".join(kept), stacklevel=3)


def _remove_old(root: Path, newest: Path, keep: int) -> list[str]:
    """Remove committed sets beyond the newest ``keep``, and failed saves, deleting only what
    mlbfgs wrote; return what was kept, and why. A link is never followed: a set directory
    that is a link loses at most the link."""
    sequence = {path: seq for seq, path in set_directories(root)}
    committed = [path for _, path in committed_sets(root)]  # newest first
    doomed = committed[keep:]
    doomed += [
        path for path, seq in sequence.items() if path not in committed and seq < sequence[newest]
    ]
    kept: list[str] = []
    for path in doomed:
        if not path.is_symlink():
            kept += _remove_set(path, root, committed=path in committed)
        elif not _delete(path, root):
            kept.append(f"{path} is a link out of {root}: kept, not followed")
    fsync_directory(root)
    return kept


def _remove_set(folder: Path, root: Path, committed: bool) -> list[str]:
    """Delete what mlbfgs wrote in the set ``folder``, then the directory if that emptied it;
    return what was kept. A committed set loses its manifest (fsynced) first, so a crash
    part way leaves it uncommitted rather than committed and incomplete."""
    ours = _written_by_mlbfgs(folder, committed)
    if committed:
        if not _delete(folder / MANIFEST, root):
            return [f"{folder}: its {MANIFEST} is a link out of {root}, so the set stays"]
        fsync_directory(folder)
        _reached("mid_cleanup", 0, folder)
    foreign: list[str] = []
    links: list[str] = []
    for path in sorted(folder.iterdir()):
        if not ours(path.name) or not (path.is_symlink() or path.is_file()):
            foreign.append(path.name)
        elif not _delete(path, root):
            links.append(path.name)
    if not foreign and not links:
        folder.rmdir()
        return []
    return [
        f"{folder}: kept"
        + (f" {foreign}, not written there by mlbfgs" if foreign else "")
        + (" and" if foreign and links else "")
        + (f" links {links} out of {root}, not followed" if links else "")
    ]


def _written_by_mlbfgs(folder: Path, committed: bool) -> Callable[[str], bool]:
    """Whether a name in a set directory is one mlbfgs wrote: for a committed set, the files
    its manifest lists, the manifest, and temporary names; for an uncommitted one (a save
    that died part way), or a manifest that cannot be read, any name mlbfgs writes."""
    if not committed:
        return is_own_file
    try:
        listed = {*read_manifest(folder / MANIFEST)[0], MANIFEST}
    except CheckpointError:
        return is_own_file
    return lambda name: name in listed or (name.endswith(PARTIAL) and is_own_file(name))


def _delete(path: Path, root: Path) -> bool:
    """Unlink the file or link ``path`` (a link itself, never its target), unless it is a
    link that points outside ``root``: then it stays, and the answer is False."""
    if path.is_symlink():
        target = os.path.realpath(path)  # os.path: Path.resolve raises on a link loop
        if not Path(target).is_relative_to(os.path.realpath(root)):
            return False
    path.unlink()
    return True


def _to_numpy(value: Any) -> Any:
    """A host NumPy copy of an array of any library (plain scalars and lists unchanged)."""
    return backend_of(value).to_numpy(value) if is_array_api_obj(value) else value
