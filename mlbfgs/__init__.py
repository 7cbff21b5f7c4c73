"""mlbfgs: mL-BFGS, a momentum-based, damped, block-diagonal stochastic L-BFGS.

``mlbfgs.MLBFGS`` optimises a list of arrays of any array-API library (NumPy, CuPy,
torch, ...); ``mlbfgs.core`` holds the mathematics; ``mlbfgs.comm`` the collectives.
"""

from . import core
from .core import MLBFGSConfig
from .engine import MLBFGS, NonFiniteGradientError

__version__ = "0.1.0"

__all__ = ["MLBFGS", "MLBFGSConfig", "NonFiniteGradientError", "__version__", "core"]
