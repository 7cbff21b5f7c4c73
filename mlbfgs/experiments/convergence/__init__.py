"""The convergence suite behind ``mlbfgs reproduce convergence`` (see ``suite.py``)."""

from .methods import DEFAULT_METHODS, METHODS, Method
from .runs import RunKey, RunResult, run
from .suite import Outcome, Protocol, choose_lr, iterations_ratio, run_suite, total_runs
from .tasks import TASKS, Task

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "TASKS",
    "Method",
    "Outcome",
    "Protocol",
    "RunKey",
    "RunResult",
    "Task",
    "choose_lr",
    "iterations_ratio",
    "run",
    "run_suite",
    "total_runs",
]
