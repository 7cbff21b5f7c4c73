"""Collectives for distributed mL-BFGS (one process, MPI, torch.distributed); no maths.

``MPIComm`` and ``TorchComm`` import their libraries only when constructed, so
``import mlbfgs`` needs neither; each array library's buffers come from its backend.
"""

from .base import Communicator, SingleProcessComm, displacements
from .mpi import MPIComm
from .torch import TorchComm

__all__ = ["Communicator", "MPIComm", "SingleProcessComm", "TorchComm", "displacements"]
