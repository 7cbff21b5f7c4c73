"""Crashes at any moment: the newest committed checkpoint always loads, and no rank hangs.

A save is killed on one rank at each named point of ``save_sharded``: in-process for the
whole matrix (ranks are threads, ``thread_world.py``) and under real ``mpiexec`` for a
representative set (``distributed/faults.py``: the killed rank really exits, and the
launcher takes the others down). Whatever the point, loading afterwards gives bitwise the
state of either the previous checkpoint or the new one, never a mix and never nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import mpiexec
from thread_world import Killed, ThreadComm, run_world

import mlbfgs
from mlbfgs.checkpoint import CheckpointError, load_sharded, save_sharded, sharded
from mlbfgs.core.pieces import balanced_pieces

HERE = Path(__file__).parent
SCRIPT = HERE.parent / "support" / "distributed" / "faults.py"
sys.path.insert(0, str(SCRIPT.parent))
import faults  # noqa: E402

TIMEOUT = 60
ANY_RANK = ("before_write", "mid_write", "after_write")
RANK_ZERO = ("before_commit", "mid_commit", "after_commit", "mid_cleanup")
COMMITTED = ("after_commit", "mid_cleanup")  # the points after the new set's commit


def reference(steps: int, ranks: int) -> dict[str, Any]:
    """One process's state after ``steps`` steps with the blocks of a ``ranks``-rank run
    (the default: one block per rank, balanced by elements)."""
    sizes = [p.size for p in faults.initial_params()]
    blocks = balanced_pieces(sizes, ranks) if ranks > 1 else None
    opt = faults.train(mlbfgs.comm.SingleProcessComm(), steps, blocks=blocks)
    return opt.state_dict()


def loads_as(root: Path, steps: int, ranks: int) -> mlbfgs.MLBFGS:
    """Load ``root`` on one process; assert it is bitwise the reference state."""
    opt = mlbfgs.MLBFGS(faults.initial_params(), **faults.SETTINGS)
    load_sharded(opt, root)
    loaded, expected = opt.state_dict(), reference(steps, ranks)
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert same(loaded[key], value), key
    return opt


def same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def entries(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def save_on_threads(root: Path, ranks: int, steps: int, kill: tuple[int, str] | None) -> list:
    comms: dict[int, ThreadComm] = {}

    def body(comm: ThreadComm) -> Path:
        comms[comm.rank] = comm
        opt = faults.train(comm, steps)
        return save_sharded(opt, root)

    if kill is None:
        return run_world(ranks, body, return_errors=True)
    rank, point = kill
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sharded, "_reached", faults.crash_at(rank, point, lambda: comms[rank].kill()))
        return run_world(ranks, body, return_errors=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed checkpoint of 3 ranks at step 6."""
    root = tmp_path_factory.mktemp("base") / "ckpt"
    results = save_on_threads(root, 3, 6, None)
    assert all(isinstance(result, Path) for result in results), results
    return root


@pytest.mark.parametrize(
    ("rank", "point"), [(r, p) for p in ANY_RANK for r in range(3)] + [(0, p) for p in RANK_ZERO]
)
def test_a_save_killed_anywhere_leaves_the_newest_committed_set(
    base: Path, tmp_path: Path, rank: int, point: str
) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(base, root)
    results = save_on_threads(root, 3, 10, (rank, point))
    assert isinstance(results[rank], Killed), results
    opt = loads_as(root, 10 if point in COMMITTED else 6, 3)
    # The next save clears whatever the crash left: one set, no partial files.
    save_sharded(opt, root)
    (only,) = entries(root)[:1]
    assert entries(root) == [only, f"{only}/manifest.json", f"{only}/mlbfgs-rank00000-of-00001.npz"]


def test_keep_the_newest_sets(tmp_path: Path) -> None:
    opt = faults.train(mlbfgs.comm.SingleProcessComm(), 2)
    saved = []
    for _ in range(4):
        saved.append(save_sharded(opt, tmp_path, keep=2))
        opt.step(faults.gradient(opt.step_count + 1, faults.initial_params()))
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved[2].name, saved[3].name]
    assert saved[3].name == "ckpt-000004-step000000005"
    assert (
        load_sharded(mlbfgs.MLBFGS(faults.initial_params(), **faults.SETTINGS), tmp_path)
        == (saved[3])
    )
    with pytest.raises(ValueError, match="keep"):
        save_sharded(opt, tmp_path, keep=0)


def test_files_and_directories_are_fsynced(tmp_path: Path, monkeypatch) -> None:
    synced: list[str] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    root = tmp_path / "ckpt"
    folder = save_sharded(faults.train(mlbfgs.comm.SingleProcessComm(), 1), root)
    shard = folder / "mlbfgs-rank00000-of-00001.npz"
    for path in (root, folder, tmp_path):  # new entries in each directory
        assert str(path) in synced, (path, synced)
    for path in (shard, folder / "manifest.json"):  # contents, before their rename
        assert str(path) + ".partial" in synced, (path, synced)


def test_a_failed_write_on_one_rank_raises_everywhere_and_commits_nothing(
    base: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(base, root)

    def full_disk(name: str, rank: int, path: Path) -> None:
        if rank == 2 and name == "before_write":
            raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sharded, "_reached", full_disk)
        results = run_world(
            3, lambda comm: save_sharded(faults.train(comm, 10), root), return_errors=True
        )
    assert isinstance(results[2], OSError)
    for result in results[:2]:
        assert isinstance(result, CheckpointError) and "rank 2: OSError" in str(result), result
    loads_as(root, 6, 3)


def test_a_load_that_fails_on_one_rank_changes_no_rank(base: Path, tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(base, root)
    (folder,) = root.iterdir()
    shard = folder / "mlbfgs-rank00002-of-00003.npz"
    with np.load(shard) as data:
        state = dict(data)
    state["block2.history.pairs"][0, 0] = np.nan  # only rank 2 of 3 reads block 2
    size = shard.stat().st_size
    with open(shard, "wb") as stream:
        np.savez(stream, **state)
    assert shard.stat().st_size == size

    def body(comm: ThreadComm) -> Any:
        opt = faults.train(comm, 3)
        before = opt.state_dict()
        try:
            load_sharded(opt, root)
        except (ValueError, CheckpointError) as error:
            after = opt.state_dict()
            assert all(same(after[key], value) for key, value in before.items())
            return error
        return None

    results = run_world(3, body, return_errors=True)
    assert "block2.history.pairs" in str(results[2]) and "NaN" in str(results[2])
    assert all(isinstance(r, CheckpointError) and "rank 2" in str(r) for r in results[:2]), results


@pytest.mark.parametrize("damage", ["truncate", "remove", "garbage"])
def test_file_errors_name_the_path(base: Path, tmp_path: Path, damage: str) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(base, root)
    (folder,) = root.iterdir()
    shard = folder / "mlbfgs-rank00001-of-00003.npz"
    if damage == "truncate":
        os.truncate(shard, shard.stat().st_size // 2)
    elif damage == "remove":
        shard.unlink()
    else:
        shard.write_bytes(b"x" * shard.stat().st_size)  # same size, not a zip file
    opt = mlbfgs.MLBFGS(faults.initial_params(), **faults.SETTINGS)
    with pytest.raises((OSError, CheckpointError), match=str(shard)):
        load_sharded(opt, root)
    assert opt.step_count == 0


# -- under real mpiexec ---------------------------------------------------------------------


def _launch(ranks: int, *args: str) -> tuple[int, str]:
    process = subprocess.Popen(
        [mpiexec(), "-n", str(ranks), sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"mpiexec -n {ranks} {' '.join(args)} did not end within {TIMEOUT} s")
    return process.returncode, out.decode(errors="replace")


@pytest.mark.parametrize(
    ("ranks", "kill", "loads"),
    [
        (2, "1:before_write", 6),  # 2 ranks over a 3-rank checkpoint: the old set survives
        (3, "2:mid_write", 6),
        (3, "1:after_write", 6),
        (3, "0:mid_commit", 6),
        (3, "0:mid_cleanup", 10),
    ],
)
def test_mpiexec_rank_killed_during_a_save(
    base: Path, tmp_path: Path, ranks: int, kill: str, loads: int
) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(base, root)
    code, out = _launch(ranks, "--dir", str(root), "--steps", "10", "--kill", kill)
    assert code != 0, out
    loads_as(root, loads, ranks if loads == 10 else 3)


def test_mpiexec_uncaught_exception_on_one_rank_ends_the_job() -> None:
    """Rank 1 raises inside step() while rank 0 waits in the reduce-scatter: under plain
    python, MPIComm's exception hook aborts the job (it used to hang for ever)."""
    code, out = _launch(2, "--raise-on", "1")
    assert code != 0
    assert "ValueError: grads has 5 arrays" in out and "MPI.COMM_WORLD.Abort(1)" in out, out


def test_the_exception_hook_prints_then_ends_and_installs_once(monkeypatch, capsys) -> None:
    from mlbfgs.comm import _exit

    ended: list[str] = []
    monkeypatch.setattr(_exit, "_installed", [])
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    assert _exit.end_job_on_uncaught_exception("ends", lambda: ended.append("first"))
    assert not _exit.end_job_on_uncaught_exception("again", lambda: ended.append("second"))
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        sys.excepthook(RuntimeError, error, error.__traceback__)
    assert ended == ["first"]
    assert "RuntimeError: boom" in capsys.readouterr().err
