"""In-process tests of the distributed pieces: block assignment, set-up agreement,
per-rank state dicts and the checkpoint directory format (no launches here)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlbfgs
from mlbfgs.checkpoint import ShardedState, load_sharded, save_sharded
from mlbfgs.comm import Communicator, SingleProcessComm
from mlbfgs.engine.assignment import assign_blocks, rank_counts
from mlbfgs.engine.distributed import DistributedSetupError, construct_together


class PretendRank:
    """Rank ``rank`` of ``size``: the other ranks' fingerprints are given (or echo ours)."""

    def __init__(self, rank: int, size: int, others: dict[int, Any] | None = None) -> None:
        self.rank, self.size, self.others = rank, size, others or {}

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj if r == self.rank else self.others.get(r, obj) for r in range(self.size)]

    def reduce_scatter(self, send: Any, recv: Any, counts: Sequence[int]) -> None:
        raise AssertionError("no collective expected")

    def allgatherv(self, buffer: Any, counts: Sequence[int]) -> None:
        raise AssertionError("no collective expected")


def params() -> list[np.ndarray]:
    return [np.arange(float(n)).reshape(-1) for n in (5, 3, 8, 2)]


@settings(max_examples=60)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=7), st.integers(1, 9))
def test_assignment_is_contiguous_complete_and_balanced(sizes: list[int], ranks: int) -> None:
    owned = assign_blocks(sizes, ranks)
    assert len(owned) == ranks
    assert [b for blocks in owned for b in blocks] == list(range(len(sizes)))
    assert all(blocks for blocks in owned[: min(ranks, len(sizes))])
    loads = rank_counts(sizes, owned)
    assert sum(loads) == sum(sizes)
    # No contiguous split into min(ranks, blocks) non-empty runs has a smaller largest load.
    used = min(ranks, len(sizes))
    best = min(
        max(sum(sizes[a:b]) for a, b in itertools.pairwise((0, *cuts, len(sizes))))
        for cuts in itertools.combinations(range(1, len(sizes)), used - 1)
    )
    assert max(loads) == best


def test_assignment_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="ranks"):
        assign_blocks([3, 4], 0)
    with pytest.raises(ValueError, match="block"):
        assign_blocks([], 2)


def test_ranks_that_agree_build_and_own_their_blocks() -> None:
    comm = PretendRank(1, 3)
    assert isinstance(comm, Communicator)
    opt = mlbfgs.MLBFGS(params(), comm=comm)
    assert len(opt.layouts) == 3 and opt.owned == [1]
    assert opt.assignment == [[0], [1], [2]]
    state = opt.state_dict()
    assert {key.split(".")[0] for key in state if key.startswith("block")} == {"block1"}
    assert state["owned_blocks"] == [1]


def test_disagreeing_ranks_get_a_clear_error() -> None:
    def fingerprint(**change: Any) -> dict[str, Any]:
        opt = mlbfgs.MLBFGS(params(), comm=PretendRank(0, 2), **change)
        return opt._fingerprint()

    other = (True, fingerprint(history_size=5))  # what together() gathers from rank 1
    with pytest.raises(
        DistributedSetupError, match=r"history_size: 10 on ranks \[0\], 5 on ranks \[1\]"
    ):
        mlbfgs.MLBFGS(params(), comm=PretendRank(0, 2, {1: other}))
    failed = (False, "ValueError: lr must be ...")
    with pytest.raises(DistributedSetupError, match="rank 2: ValueError: lr must be"):
        mlbfgs.MLBFGS(params(), comm=PretendRank(0, 3, {2: failed}))


def test_a_rank_whose_set_up_fails_still_joins_the_check() -> None:
    joined = []

    class Recording(PretendRank):
        def allgather_object(self, obj: Any) -> list[Any]:
            joined.append(obj)
            return super().allgather_object(obj)

    with pytest.raises(ValueError, match="lr"):
        mlbfgs.MLBFGS(params(), comm=Recording(0, 2), lr=-1.0)
    assert len(joined) == 1 and joined[0][0] is False and "lr" in joined[0][1]
    with pytest.raises(ValueError, match="boom"):
        construct_together(SingleProcessComm(), lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_distributed_needs_one_dtype() -> None:
    mixed = [np.zeros(3), np.zeros(2, dtype=np.float32)]
    with pytest.raises(ValueError, match=r"params\[1\] has dtype float32"):
        mlbfgs.MLBFGS(mixed, comm=PretendRank(0, 2), blocks=[[0], [1]])
    with pytest.raises(TypeError, match="comm"):
        mlbfgs.MLBFGS(params(), comm="mpi")  # type: ignore[arg-type]


def test_a_rank_refuses_a_state_without_its_blocks() -> None:
    opt = mlbfgs.MLBFGS(params(), comm=PretendRank(0, 2))
    other = mlbfgs.MLBFGS(params(), comm=PretendRank(1, 2)).state_dict()
    before = opt.state_dict()
    with pytest.raises(KeyError, match="load_sharded"):
        opt.load_state_dict(other)
    after = opt.state_dict()
    assert before.keys() == after.keys()


def test_default_blocks_adopt_a_saved_partition_explicit_blocks_do_not(tmp_path: Path) -> None:
    grads = [np.ones_like(p) for p in params()]
    saved = mlbfgs.MLBFGS(params(), blocks=3, history_size=2, update_every=2)
    for _ in range(7):
        saved.step(grads)
    save_sharded(saved, tmp_path)
    adopting = mlbfgs.MLBFGS(params(), history_size=2, update_every=2)
    load_sharded(adopting, tmp_path)
    assert [layout.indices for layout in adopting.layouts] == [
        layout.indices for layout in saved.layouts
    ]
    assert adopting.step_count == 7
    strict = mlbfgs.MLBFGS(params(), blocks=2, history_size=2)
    with pytest.raises(ValueError, match="partition"):
        load_sharded(strict, tmp_path)
    assert len(strict.layouts) == 2 and strict.step_count == 0


def test_sharded_directory_must_hold_a_committed_set(tmp_path: Path) -> None:
    opt = mlbfgs.MLBFGS(params())
    with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
        load_sharded(opt, tmp_path)
    (tmp_path / "ckpt-000005-step000000009").mkdir()  # a save that never committed
    with pytest.raises(FileNotFoundError, match="ckpt-000005-step000000009"):
        load_sharded(opt, tmp_path)
    folder = save_sharded(opt, tmp_path)  # removes the uncommitted set
    assert folder.name == "ckpt-000006-step000000000"
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "mlbfgs-rank00000-of-00001.npz",
    ]
    assert int(ShardedState(folder)["step"]) == 0
    assert load_sharded(opt, tmp_path) == load_sharded(opt, folder) == folder


def test_single_process_collectives_are_identities() -> None:
    comm = SingleProcessComm()
    send, recv = np.arange(4.0), np.zeros(4)
    comm.reduce_scatter(send, recv, [4])
    comm.allgatherv(send, [4])
    assert np.array_equal(recv, send) and comm.allgather_object("x") == ["x"]


def test_ranks_beyond_the_blocks_own_nothing() -> None:
    opt = mlbfgs.MLBFGS(params(), comm=PretendRank(5, 6), blocks=4)
    assert len(opt.layouts) == 4 and opt.owned == [] and opt.history_bytes() == 0
    assert opt.assignment == [[0], [1], [2], [3], [], []]
    assert not [key for key in opt.state_dict() if key.startswith("block")]


def test_torch_comm_needs_a_process_group() -> None:
    dist = pytest.importorskip("torch.distributed")
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised here")
    from mlbfgs.comm import TorchComm

    with pytest.raises(RuntimeError, match="init_process_group"):
        TorchComm()


def test_default_blocks_split_tensors_to_balance_the_ranks() -> None:
    """blocks=None on p ranks: p blocks of equal elements (to the alignment unit, here
    below one unit per rank), cutting tensors where a layer boundary is not close."""
    sizes = [numel for numel in (p.size for p in params())]
    for ranks in (2, 3, 6):
        opt = mlbfgs.MLBFGS(params(), comm=PretendRank(0, ranks))
        counts = [layout.numel for layout in opt.layouts]
        assert len(counts) == ranks and sum(counts) == sum(sizes)
        assert max(counts) - min(counts) <= 2, counts


def test_shards_default_to_one_block_a_rank() -> None:
    """``blocks=None`` is the model's own blocks (8 from 65,536 elements) for replicated
    parameters, but one block of all a rank's shards with ``sharded=True``: FSDP's sharding,
    not the model, sets those blocks (docs/distributed.md)."""
    size = 70_000
    replicated = mlbfgs.MLBFGS([np.zeros(size, np.float32)])
    shards = mlbfgs.MLBFGS([np.zeros(size, np.float32)], sharded=True, average_grads=False)
    assert (len(replicated.layouts), len(shards.layouts)) == (8, 1)
