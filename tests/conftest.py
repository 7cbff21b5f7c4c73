"""Shared test set-up: the hypothesis profiles (docs/testing.md) and the ``backend``
fixture of the backend suites.

``MLBFGS_HYPOTHESIS`` picks one:

- ``pinned`` (default, CI): derandomized, 100 examples per property; the same examples
  on every run, so CI is reproducible.
- ``random``: 500 fresh examples per property, no example database; choose the seed with
  ``pytest --hypothesis-seed=N`` to reproduce a run. Every property must pass here too.

``MLBFGS_HYPOTHESIS_EXAMPLES=N`` sets the number of examples of either profile
(``./scripts/test`` runs one random seed of the core properties with fewer examples).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The shared helpers (reference, problems, backend cases, ...) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent / "support"))

from backend_cases import FACTORIES, Backend  # noqa: E402
from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("MLBFGS_HYPOTHESIS", "pinned")
COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow],
}
EXAMPLES = os.environ.get("MLBFGS_HYPOTHESIS_EXAMPLES")
settings.register_profile(
    "pinned",
    derandomize=True,
    **COMMON,
    **({"max_examples": int(EXAMPLES)} if EXAMPLES else {}),
)
settings.register_profile(
    "random",
    derandomize=False,
    max_examples=int(EXAMPLES or 500),
    database=None,
    **COMMON,
)
if PROFILE not in ("pinned", "random"):
    raise ValueError(f"MLBFGS_HYPOTHESIS must be 'pinned' or 'random', got {PROFILE!r}")
settings.load_profile(PROFILE)


@pytest.fixture(params=list(FACTORIES), scope="module")
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend of ``backend_cases.FACTORIES`` (skipped where absent)."""
    return FACTORIES[request.param]()
