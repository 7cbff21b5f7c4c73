"""What the optimizer race (``mlbfgs reproduce race``) costs: ms per step of every
optimizer on every workload, and the whole race's runtime estimated from them.

    .venv/bin/python benchmarks/race_cost.py [--workloads a,b] [--optimizers a,b]
        [--warmup 150] [--steps 50] [--jobs 2]

Each (workload, optimizer) trains from seed 0 at the optimizer's default lr on one torch
thread and one BLAS thread (as the race runs), untimed for --warmup steps (150: past
mL-BFGS's 2T = 100-step warm-up, and past SOAP's and Shampoo's first preconditioners),
then --steps timed steps; building the problem, one evaluation of the metric and one of
the held-out number are timed too. Work rarer than --steps is missing from ms/step
(Shampoo's inverse roots, every 1000 steps: about 1.5 s on the autoencoder, less
elsewhere). The estimate adds, per pair, 5 grid runs, 0 or 1 widened run and 3 seeds,
each of (building + the workload's steps x ms/step + 40 evaluations + the held-out
number), and divides by --jobs: a lower and an upper bound (no pair widened, every pair
widened). Run it with --jobs as the race will be, so the timings see the same contention.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from mlbfgs.experiments.convergence.runs import train
from mlbfgs.experiments.parallel import execute
from mlbfgs.experiments.race import PEERS, WORKLOADS, RaceProtocol
from mlbfgs.experiments.race.workloads import held_out


def measure(pair: tuple[str, str, int, int]) -> dict[str, Any]:
    """ms/step, ms per evaluation and ms for the held-out number of one pair."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        return _measure(pair)


def _measure(pair: tuple[str, str, int, int]) -> dict[str, Any]:
    workload, optimizer, warmup, steps = pair
    start = time.perf_counter()
    problem = WORKLOADS[workload].build(0, warmup + steps)
    build = time.perf_counter() - start
    peer = PEERS[optimizer]
    opt = peer.make(problem, peer.default_lr)
    trace = train(
        problem, opt, peer.default_lr, warmup + steps, lambda t: t in (warmup, warmup + steps)
    )
    start = time.perf_counter()
    problem.train_loss()
    evaluation = time.perf_counter() - start
    start = time.perf_counter()
    held_out(problem)
    held = time.perf_counter() - start
    seconds = trace.training_seconds[-1] - trace.training_seconds[-2]
    return {
        "ms": 1000 * seconds / steps,
        "eval_ms": 1000 * evaluation,
        "held_ms": 1000 * held,
        "build_ms": 1000 * build,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--optimizers", default=",".join(PEERS))
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    workloads, optimizers = args.workloads.split(","), args.optimizers.split(",")
    pairs = [(w, o, args.warmup, args.steps) for w in workloads for o in optimizers]
    load = os.getloadavg()[0]
    found = dict(zip(pairs, execute(measure, pairs, args.jobs, lambda _: None), strict=True))
    protocol = RaceProtocol()
    print(
        "ms per training step (and the median seconds a run spends building the problem and "
        "evaluating), one torch and one BLAS thread, "
        f"{args.jobs} processes at once; load average "
        f"{load:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print("| workload | steps | s / run besides steps | " + " | ".join(optimizers) + " |")
    print("|---" * (len(optimizers) + 3) + "|")
    low = high = 0.0
    for w in workloads:
        cells, fixed_seconds = [], []
        steps = protocol.key(w, optimizers[0], 1.0, 0).iterations
        for o in optimizers:
            m = found[w, o, args.warmup, args.steps]
            cells.append(f"{m['ms']:.3g}")
            fixed = m["build_ms"] + protocol.evaluations * m["eval_ms"] + m["held_ms"]
            run = (steps * m["ms"] + fixed) / 1000
            fixed_seconds.append(fixed / 1000)
            grid = len(protocol.grid_exponents)
            low += run * (grid + len(protocol.seeds))
            high += run * (grid + 1 + len(protocol.seeds))
        overhead = statistics.median(fixed_seconds)
        print(f"| {w} | {steps} | {overhead:.2g} | " + " | ".join(cells) + " |")
    print(
        f"\nestimated race: {low / 3600:.2f}-{high / 3600:.2f} CPU hours; "
        f"{low / args.jobs / 3600:.2f}-{high / args.jobs / 3600:.2f} h on {args.jobs} processes"
    )


if __name__ == "__main__":
    main()
