"""Collectives for distributed mL-BFGS; no mathematics lives here.

``MPIComm`` (mpi4py) and ``TorchComm`` (torch.distributed) import their libraries only
when constructed, so ``import mlbfgs`` needs neither.
"""

from .base import Communicator, SingleProcessComm, displacements
from .mpi import MPIComm
from .torch import TorchComm

__all__ = ["Communicator", "MPIComm", "SingleProcessComm", "TorchComm", "displacements"]
