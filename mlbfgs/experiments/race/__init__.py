"""The optimizer race behind ``mlbfgs reproduce race`` (issue 17; ``protocol.py``)."""

from .peers import BASELINES, PEERS, Peer, mlbfgs_variant
from .protocol import RaceKey, RaceProtocol
from .race import Outcome, Standings, Target, run_race, standings, targets, total_runs
from .runs import RaceResult, run
from .workloads import HELD_OUT, NEW, WORKLOADS

__all__ = [
    "BASELINES",
    "HELD_OUT",
    "NEW",
    "PEERS",
    "WORKLOADS",
    "Outcome",
    "Peer",
    "RaceKey",
    "RaceProtocol",
    "RaceResult",
    "Standings",
    "Target",
    "mlbfgs_variant",
    "run",
    "run_race",
    "standings",
    "targets",
    "total_runs",
]
