"""Finished runs of the race on disk, so that an interrupted race resumes (``--resume``).

The full race is hours of runs on a small machine, and nothing in it needs to be
recomputed after an interruption: each run is deterministic given its key. So every run
is written, as soon as it finishes, to one JSON file of ``OUT/runs/``, named by a digest
of its key and of a fingerprint of the code (every source file of the package and the
versions of the packages the peers come from). A resumed race reuses a file only when
both match, so no run outlives a change of the code; its timed fields are those of the
race that wrote it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .protocol import RaceKey
from .runs import RaceResult

PACKAGES = ("numpy", "torch", "pytorch-optimizer")
"""Distributions whose version is part of the fingerprint: the peers and the arithmetic."""


def code_fingerprint() -> str:
    """A digest of the package's source files and of the versions of ``PACKAGES``."""
    package = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RunStore:
    """The folder of finished runs; ``reuse`` says whether :meth:`load` may return them."""

    folder: Path
    code: str
    reuse: bool = False

    def path(self, key: RaceKey) -> Path:
        name = json.dumps([self.code, asdict(key)], sort_keys=True)
        return self.folder / f"{key.workload}-{hashlib.sha256(name.encode()).hexdigest()[:20]}.json"

    def load(self, key: RaceKey) -> RaceResult | None:
        """The stored run of ``key`` under this code, if reusing and there is one."""
        if not self.reuse:
            return None
        try:
            raw = json.loads(self.path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # absent, or cut off mid-write
            return None
        if raw.get("code") != self.code or raw.get("key") != asdict(key):
            return None
        return RaceResult(
            key, raw["iterations"], raw["loss"], raw["seconds"], raw["held_out"], raw["error"]
        )

    def save(self, result: RaceResult) -> None:
        """Write ``result`` atomically (a race killed mid-write leaves no partial file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "code": self.code,
            "key": asdict(result.key),
            "iterations": result.iterations,
            "loss": result.loss,  # NaN and inf as JSON's extension, which json reads back
            "seconds": result.seconds,
            "held_out": result.held_out,
            "error": result.error,
        }
        path = self.path(result.key)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(record))
        os.replace(partial, path)


@dataclass(frozen=True)
class Saving:
    """``worker`` that stores each result as it finishes, in the worker process (a
    picklable callable, for the process pool)."""

    worker: Callable[[RaceKey], RaceResult]
    store: RunStore

    def __call__(self, key: RaceKey) -> RaceResult:
        result = self.worker(key)
        self.store.save(result)
        return result
