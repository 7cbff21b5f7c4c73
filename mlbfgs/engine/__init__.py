"""The engine: ``MLBFGS`` applied to a list of arrays of any array-API library.

It checks inputs, lays out and assigns the curvature blocks, runs ``mlbfgs.core`` on them
over ``mlbfgs.comm``, and encodes and checks its state; it imports neither checkpoint nor torch.
"""

from .distributed import DistributedSetupError
from .guard import ConcurrentUseError
from .optimizer import MLBFGS, NonFiniteGradientError, PreparedStep

__all__ = [
    "MLBFGS",
    "ConcurrentUseError",
    "DistributedSetupError",
    "NonFiniteGradientError",
    "PreparedStep",
]
