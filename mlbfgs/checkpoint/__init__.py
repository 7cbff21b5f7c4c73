"""Sharded checkpoints: every rank saves its own blocks; a set is committed all at once.

Sits above the engine and uses only its public methods (``state_dict``, ``check_state``,
``adopt_state``); ``sharded`` writes and loads sets, ``files`` names and reads their files.
"""

from .files import CheckpointError, ShardedState, find_checkpoint
from .sharded import load_sharded, save_sharded

__all__ = ["CheckpointError", "ShardedState", "find_checkpoint", "load_sharded", "save_sharded"]
