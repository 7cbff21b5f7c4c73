"""Distributed mL-BFGS over real MPI (PyPI ``mpich``) and real torch.distributed (gloo).

Every launch costs seconds, so four launches run all multi-rank checks
(``tests/support/distributed/run_checks.py``): MPI on 4 ranks (and a per-rank checkpoint), MPI on 2
ranks (and the resume of that checkpoint, and torch tensors through MPI), gloo on 2 and
on 4 ranks. Each launch has a timeout, so a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import finish, free_port, mpiexec

HERE = Path(__file__).parent
SCRIPT = HERE.parent / "support" / "distributed" / "run_checks.py"
sys.path.insert(0, str(SCRIPT.parent))
import run_checks as checks  # noqa: E402

TIMEOUT = 150
EXPECTED = [
    "default_blocks",
    "default_blocks_model",
    "more_blocks_than_ranks",
    "explicit_blocks",
    "same_grads_averaged",
    *checks.STEP_CONTROLS,
    "averaged",
    "memory",
    "mismatch",
    "nonfinite",
    "torch_tensors",
    "torch_optimizer",
    "torch_rank0_checkpoint",
]


def _launch_mpi(ranks: int, out: Path, *extra: str) -> None:
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(SCRIPT), "--comm", "mpi"]
    process = subprocess.Popen(
        [*command, "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    finish([process], f"mpiexec -n {ranks}", TIMEOUT)


def _launch_gloo(ranks: int, out: Path) -> None:
    pytest.importorskip("torch.distributed")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env["WORLD_SIZE"] = str(ranks)
    processes = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "--comm", "torch", "--out", str(out), "--torch"],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for r in range(ranks)
    ]
    finish(processes, f"gloo on {ranks} ranks", TIMEOUT)


def _reports(out: Path, ranks: int) -> list[dict[str, Any]]:
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]
    for report in reports:
        failures = "\n".join(
            f"[rank {report['rank']}] {k}:\n{v}" for k, v in report["failed"].items()
        )
        assert not failures, failures
    return reports


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoint")


@pytest.fixture(scope="module")
def mpi4(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("mpi4")
    _launch_mpi(4, out, "--save", str(checkpoint))
    return _reports(out, 4)


@pytest.fixture(scope="module")
def mpi2(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, mpi4: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("mpi2")
    _launch_mpi(2, out, "--resume", str(checkpoint), "--torch")
    return _reports(out, 2)


@pytest.fixture(scope="module", params=[2, 4])
def gloo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp(f"gloo{request.param}")
    _launch_gloo(request.param, out)
    return _reports(out, request.param)


def _single_process_history_bytes() -> int:
    import mlbfgs

    params = checks.initial_params(np.float32, [(64, 16)] * 4)
    return mlbfgs.MLBFGS(params, blocks=4, history_size=5).history_bytes()


def _check_launch(reports: list[dict[str, Any]], expected: list[str]) -> None:
    ranks = len(reports)
    for report in reports:
        assert set(expected) <= set(report["passed"]), report["passed"]
        assert report["exit_hook"], "the communicator installed no exception hook"
    # At the defaults (blocks=None) 1, 2 and 4 ranks run the same optimizer on a model of
    # 85,002 elements (8 blocks: bitwise one process's parameters), not on one of 200
    # elements (one block alone, one per rank on several: design section 5).
    expected_equal = {"85,002 elements": [8, 8, True], "200 elements": [ranks, 1, False]}
    assert all(r["default_blocks_equal"] == expected_equal for r in reports), reports
    total = _single_process_history_bytes()
    assert [r["history_bytes"] for r in reports] == [total // ranks] * ranks
    assert [r["owned_for_memory"] for r in reports] == [
        list(range(k * 4 // ranks, (k + 1) * 4 // ranks)) for k in range(ranks)
    ]


def test_mpi_on_4_ranks_equals_one_process_and_saves(mpi4: list[dict[str, Any]]) -> None:
    _check_launch(mpi4, [*EXPECTED[:-3], "save", "datatypes"])


def test_mpi_on_2_ranks_equals_one_process_and_resumes_a_4_rank_checkpoint(
    mpi2: list[dict[str, Any]],
) -> None:
    _check_launch(mpi2, [*EXPECTED, "resume", "datatypes"])


def test_gloo_equals_one_process(gloo: list[dict[str, Any]]) -> None:
    _check_launch(gloo, EXPECTED)


def test_4_rank_checkpoint_resumes_on_one_process(
    mpi4: list[dict[str, Any]], checkpoint: Path
) -> None:
    from mlbfgs.comm import SingleProcessComm

    params = checks.resume_and_continue(SingleProcessComm(), checkpoint, checks.CHECKPOINT_STEPS[1])
    saved = np.load(checkpoint / "continued-on-4.npz")
    checks.same_bits(params, [saved[f"arr_{i}"] for i in range(len(params))], "resumed on 1")
    (folder,) = checkpoint.glob("ckpt-*")  # one committed set
    files = sorted(p.name for p in folder.glob("mlbfgs-rank*.npz"))
    assert files == [f"mlbfgs-rank{r:05d}-of-00004.npz" for r in range(4)]
    for r, name in enumerate(files):  # each rank saved its own block, nobody the whole history
        with np.load(folder / name) as shard:
            assert list(shard["owned_blocks"]) == [r]
            assert {key.split(".")[0] for key in shard.files if key.startswith("block")} == {
                f"block{r}"
            }
