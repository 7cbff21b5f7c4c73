"""Shared test set-up: deterministic hypothesis runs everywhere (CI included)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mlbfgs",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("mlbfgs")
