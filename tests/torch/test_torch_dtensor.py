"""DTensor parameters in ``mlbfgs.torch.MLBFGS`` on gloo (``mlbfgs/torch/dtensor.py``):
FSDP2 trains and equals bitwise one process whose blocks are the shards (default step
control, ``step_norm="unit"`` summed over ranks, the released preset); a NaN on one rank
raises on every rank; a ``torch.distributed.checkpoint`` round trip continues bitwise; a
tensor-parallel Linear pair equals its one-process twin; a checkpoint of 4 ranks is
refused on 2 with an error that says why; unsupported groups raise naming the parameter.

Two launches (4 ranks, which also saves a checkpoint, then 2 ranks, which also tries to
resume it) run every check (``tests/support/distributed/dtensor_checks.py``), each under a
timeout so that a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch.distributed.fsdp")
SCRIPT = Path(__file__).parents[1] / "support" / "distributed" / "dtensor_checks.py"
TIMEOUT = 150
sys.path.insert(0, str(SCRIPT.parent))
from dtensor_checks import CHECKS  # noqa: E402
from helpers import finish, free_port  # noqa: E402


def _launch(ranks: int, out: Path, *extra: str) -> list[dict[str, Any]]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.update(WORLD_SIZE=str(ranks), OMP_NUM_THREADS="1")
    processes = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "--out", str(out), *extra],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for r in range(ranks)
    ]
    finish(processes, f"gloo on {ranks} ranks", TIMEOUT)
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]
    failures = "\n".join(
        f"[rank {x['rank']}] {k}:\n{v}" for x in reports for k, v in x["failed"].items()
    )
    assert not failures, failures
    return reports


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dcp4") / "ckpt"


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> list[dict[str, Any]]:
    return _launch(4, tmp_path_factory.mktemp("dtensor4"), "--save", str(checkpoint))


@pytest.fixture(scope="module")
def two(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, four: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return _launch(2, tmp_path_factory.mktemp("dtensor2"), "--resume", str(checkpoint))


@pytest.mark.parametrize("ranks", [4, 2])
def test_fsdp2_and_tensor_parallel_equal_one_process(
    ranks: int, four: list[dict[str, Any]], two: list[dict[str, Any]]
) -> None:
    reports = four if ranks == 4 else two
    for report in reports:
        assert set(CHECKS) <= set(report["passed"]), report["passed"]
        first, last = report["losses"]
        assert last < 0.5 * first  # FSDP2 trains (40 steps)


def test_a_checkpoint_of_4_ranks_is_refused_on_2(two: list[dict[str, Any]]) -> None:
    for report in two:
        assert "resume_on_other_ranks_is_refused" in report["passed"]
