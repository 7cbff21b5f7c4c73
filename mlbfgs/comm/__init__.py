"""Collectives for distributed mL-BFGS; no mathematics lives here."""

from .base import Communicator, SingleProcessComm

__all__ = ["Communicator", "SingleProcessComm"]
