"""One run of the race: a workload, an optimizer, an lr and a seed, on one torch thread."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..convergence.runs import LossCurve, Trace, train
from .peers import PEERS
from .protocol import RaceKey
from .workloads import WORKLOADS, held_out


@dataclass
class RaceResult(LossCurve):
    """The metric at each evaluation (``loss``; the first entry is the initial point), the
    training seconds up to each, the held-out number, and what a raising step said."""

    key: RaceKey
    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    """Training time (evaluations excluded) up to each evaluation."""
    held_out: float = math.nan
    error: str | None = None
    """``Type: message`` of the exception a step raised; the curve then ends in NaN."""

    @property
    def ms_per_step(self) -> float:
        """Training milliseconds per step, over the evaluated part of the run."""
        steps = self.iterations[-1]
        return 1000.0 * self.seconds[-1] / steps if steps > 0 else math.nan

    def reached(self, target: float) -> tuple[float, float]:
        """(steps, seconds) at the first evaluation after step 0 with metric <= target;
        (inf, inf) if there is none."""
        pairs = zip(self.iterations, self.loss, self.seconds, strict=True)
        for iteration, value, seconds in pairs:
            if iteration > 0 and value <= target:
                return float(iteration), seconds
        return math.inf, math.inf


def run(key: RaceKey) -> RaceResult:
    """Train ``key.optimizer`` on ``key.workload`` from the seed's initial point, on one
    torch thread and one BLAS thread (NumPy builds some problems: the quadratics' QR took
    9 s instead of 0.1 s with two BLAS threads per process on two busy cores).

    An exception from the optimizer (a failed eigendecomposition, say) ends the run as
    diverged, with its message kept, rather than ending the race.
    """
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(key)


def _run(key: RaceKey) -> RaceResult:
    problem = WORKLOADS[key.workload].build(key.seed, key.iterations)
    evaluated = set(key.evaluated())
    trace = Trace()
    error = None
    try:
        optimizer = PEERS[key.optimizer].make(problem, key.lr)
        train(problem, optimizer, key.lr, key.iterations, evaluated.__contains__, trace)
    except Exception as exc:  # any failure of a peer is a result, not a crash
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not trace.loss:
            trace.loss.append(problem.train_loss())
            trace.iterations.append(0)
            trace.training_seconds.append(0.0)
        trace.iterations.append(trace.steps + 1)
        trace.loss.append(math.nan)
        trace.training_seconds.append(trace.training_seconds[-1])
    result = RaceResult(key, trace.iterations, trace.loss, trace.training_seconds, error=error)
    if math.isfinite(result.final_loss):
        result.held_out = held_out(problem)
    return result
