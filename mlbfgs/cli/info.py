"""``mlbfgs info``: version, array backends (and why one is missing), MPI library, GPUs."""

from __future__ import annotations

import argparse
import importlib
import platform
from typing import Any

from .. import __version__
from ..extras import install_hint


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("info", help="version, backends, MPI library and GPUs")
    parser.add_argument("--quick", action="store_true", help="same output (for symmetry)")
    parser.set_defaults(run=run, check=check, parser=parser)


def check(args: argparse.Namespace) -> None:
    """Nothing to check: info reports missing packages instead of failing on them."""


def _probe(module: str) -> tuple[Any, str]:
    try:
        return importlib.import_module(module), ""
    except Exception as error:  # noqa: BLE001 - any import failure is a reason to report
        return None, f"not available: {type(error).__name__}: {error}"


def backends() -> list[tuple[str, str]]:
    """(name, status) for every array backend mlbfgs knows."""
    import numpy

    rows = [("numpy", f"yes, {numpy.__version__} (reference backend)")]
    torch, why = _probe("torch")
    if torch is None:
        rows.append(("torch", f"{why} ({install_hint('torch')})"))
    else:
        adapter, reason = _probe("mlbfgs.torch")
        extra = "mlbfgs.torch.MLBFGS ready" if adapter is not None else f"no adapter: {reason}"
        rows.append(("torch", f"yes, {torch.__version__}; {extra}"))
    cupy, why = _probe("cupy")
    if cupy is None:
        rows.append(("cupy", why))
    else:
        try:
            ok = bool(cupy.is_available())
        except Exception:  # noqa: BLE001
            ok = False
        rows.append(("cupy", f"{cupy.__version__}, " + ("GPU ready" if ok else "no usable GPU")))
    strict, why = _probe("array_api_strict")
    rows.append(("array_api_strict", f"yes, {strict.__version__}" if strict else why))
    return rows


def mpi() -> str:
    mpi4py, why = _probe("mpi4py")
    if mpi4py is None:
        return f"{why} ({install_hint('mpi4py')})"
    try:
        from mpi4py import MPI

        library = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
        return f"mpi4py {mpi4py.__version__}; {library}"
    except Exception as error:  # noqa: BLE001
        return f"mpi4py {mpi4py.__version__} but the MPI library failed to load: {error}"


def gpus() -> list[str]:
    found = []
    torch, _ = _probe("torch")
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            found.append(f"cuda:{i} {torch.cuda.get_device_name(i)} (torch)")
    return found


def run(args: argparse.Namespace) -> int:
    print(f"mlbfgs {__version__} (python {platform.python_version()}, {platform.machine()})")
    print("backends:")
    for name, status in backends():
        print(f"  {name:17s} {status}")
    print(f"MPI: {mpi()}")
    devices = gpus()
    print("GPUs: " + (", ".join(devices) if devices else "none found (torch.cuda not available)"))
    return 0
