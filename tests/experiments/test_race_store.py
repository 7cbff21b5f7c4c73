"""The race's run store (``experiments/race/store.py``): a stopped race resumes from the
runs it stored, and only under the same code."""

from __future__ import annotations

import math
from pathlib import Path

from race_fakes import fake_worker

from mlbfgs.experiments.race import RaceKey, RaceProtocol, RaceResult, run_race, total_runs
from mlbfgs.experiments.race.store import RunStore, code_fingerprint


def test_a_stopped_race_resumes_from_its_stored_runs(tmp_path: Path) -> None:
    """Every run is stored as it finishes; a resumed race reruns only the missing ones and
    gives the same outcomes, and a store of other code reuses nothing."""
    protocol = RaceProtocol(workloads=("mlp32",), optimizers=("SGD", "AdamW"))
    calls: list[RaceKey] = []
    fake = fake_worker({"SGD": 3.0, "AdamW": 1e-3})

    def worker(key: RaceKey) -> RaceResult:
        calls.append(key)
        return fake(key)

    def race(store: RunStore) -> str:
        """The outcomes' repr, equal where they are (NaN included)."""
        counted: list[int] = []
        outcomes = run_race(protocol, ["mlp32"], ["SGD", "AdamW"], 1, counted.append, worker, store)
        assert sum(counted) == total_runs(protocol, ["mlp32"], ["SGD", "AdamW"])
        return repr(outcomes)

    folder = tmp_path / "runs"
    first = race(RunStore(folder, "code-a"))
    assert len(calls) == 2 * 5 + 1 + 2 * 3 == len(list(folder.glob("*.json")))
    calls.clear()
    assert race(RunStore(folder, "code-a", reuse=False)) == first and len(calls) == 17

    stopped = sorted(folder.glob("*.json"))[:6]  # as if the race had been killed
    for path in stopped:
        path.unlink()
    (folder / "mlp32-half-written.json.1.partial").write_text('{"code": "co')
    calls.clear()
    assert race(RunStore(folder, "code-a", reuse=True)) == first
    assert len(calls) == 6 and {RunStore(folder, "code-a").path(k) for k in calls} == set(stopped)
    calls.clear()
    assert race(RunStore(folder, "code-a", reuse=True)) == first and calls == []
    assert race(RunStore(folder, "code-b", reuse=True)) == first and len(calls) == 17


def test_a_stored_run_round_trips_nan_and_errors(tmp_path: Path) -> None:
    key = RaceKey("mlp32", "SGD", 0.1, 1, 10, 2)
    result = RaceResult(key, [0, 5, 10], [2.0, math.inf, math.nan], [0.0, 0.1, 0.2], error="E: x")
    store = RunStore(tmp_path, "code", reuse=True)
    store.save(result)
    back = store.load(key)
    assert back is not None and back.error == "E: x" and back.iterations == [0, 5, 10]
    assert back.loss[1] == math.inf and math.isnan(back.loss[2]) and math.isnan(back.held_out)
    assert store.load(RaceKey("mlp32", "SGD", 0.1, 2, 10, 2)) is None
    assert RunStore(tmp_path, "code").load(key) is None  # not reusing
    assert len(code_fingerprint()) == 16 and code_fingerprint() == code_fingerprint()
