"""Assertions and launchers shared by the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlbfgs.backends import kernels_for
from mlbfgs.core import MLBFGSConfig
from mlbfgs.core import functional as pure


def mpiexec() -> str:
    """The virtual environment's ``mpiexec`` (or one on PATH); skips without mpi4py."""
    pytest.importorskip("mpi4py")
    path = Path(sys.executable).parent / "mpiexec"
    found = str(path) if path.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec (pip install mpich)")
    return found


def free_port() -> int:
    """A TCP port on localhost that nothing listens on (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def finish(processes: list[subprocess.Popen[bytes]], what: str, timeout: float) -> None:
    """Wait for every process; on a timeout kill their process groups and fail; fail on
    a non-zero exit with its output."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"{what} did not finish within {timeout} s (a hang?)")
    for p, (out, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, f"{what} failed:\n{out.decode()}\n{err.decode()}"


def snapshot(params: list[Any], opt: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Copies of the parameters and of the optimizer state, to compare after a call."""
    return [np.array(p, copy=True) for p in params], opt.state_dict()


def assert_unchanged(
    before: tuple[list[np.ndarray], dict[str, Any]], params, opt, ignore: tuple[str, ...] = ()
) -> None:
    """Parameters and optimizer state are bitwise what ``snapshot`` recorded.

    Keys ending in one of ``ignore`` (say, a step counter) are not compared.
    """
    old_params, old_state = before
    for old, new in zip(old_params, params, strict=True):
        np.testing.assert_array_equal(np.asarray(new), old)
    new_state = opt.state_dict()
    assert old_state.keys() == new_state.keys()
    for key, value in old_state.items():
        if key.endswith(ignore):
            continue
        np.testing.assert_array_equal(np.asarray(new_state[key]), np.asarray(value), err_msg=key)


def pure_run(
    xp: Any,
    theta: Any,
    config: MLBFGSConfig,
    gradient: Callable[[int, Any], Any],
    steps: int,
    lr: float = 0.1,
    each: Callable[[Any], None] | None = None,
) -> tuple[Any, Any]:
    """``steps`` steps of the pure step (``core/functional.py``) on one block whose flat
    parameters start at ``theta``, step t's gradient ``gradient(t, theta)`` (t from 1),
    the Gram algebra in float64; ``each(state)`` sees the state before step 1 and after
    every step. Returns the final parameters and state."""
    state = pure.init(xp, [theta], config, xp.float64)
    kernels = kernels_for(xp)
    for t in range(1, steps + 1):
        if each is not None:
            each(state)
        (update,), state = pure.step(state, [theta], [gradient(t, theta)], lr, config, kernels)
        theta = theta + update
    if each is not None:
        each(state)
    return theta, state
