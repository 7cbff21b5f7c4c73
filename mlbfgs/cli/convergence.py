"""``mlbfgs reproduce convergence``: the convergence suite (``mlbfgs.experiments.convergence``).

Every optimizer gets the same five-point lr grid per task (Adam's at a tenth of the
scale), tuned on seed 0; the chosen lr then runs on seeds 1-5, and only those runs are
reported. Diverged means a non-finite or a final training loss above the initial one.
The table reports, per task and optimizer: the chosen lr, divergences on the grid and on
the five seeds, the median final training loss and test accuracy, and the median number
of iterations needed to reach SGD's final training loss, as a multiple of SGD's own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import finite_or_text, names, out_dir, positive_int, progress, pyplot, save, table

DEFAULT_LABEL = "mL-BFGS"


def add_arguments(parser: Any) -> None:
    parser.add_argument("--tasks", help="comma-separated task names (default: all seven)")
    parser.add_argument(
        "--methods", help="comma-separated optimizer labels (default: the five compared)"
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default min(2, CPUs))",
    )


def run(args: argparse.Namespace) -> int:
    from ..experiments.convergence import (
        DEFAULT_METHODS,
        METHODS,
        TASKS,
        Protocol,
        run_suite,
        total_runs,
    )

    tasks = names(args.tasks, list(TASKS), "task")
    methods = names(args.methods, list(DEFAULT_METHODS), "method", known=list(METHODS))
    if "SGD" not in methods:
        raise ValueError("--methods must include SGD: every ratio is measured against it")
    protocol = Protocol.quick() if args.quick else Protocol()
    print(
        f"convergence suite: {len(tasks)} tasks x {len(methods)} optimizers; lr tuned on seed "
        f"{protocol.tuning_seed}, reported on seeds {list(protocol.seeds)}; budget "
        f"{protocol.budget:g} x each task's iterations; {args.jobs} processes"
    )
    for name in tasks:
        task = TASKS[name]
        print(f"  {name}: {task.description}; {task.iterations} iterations, lr grid {task.lr_grid}")
    for name in methods:
        print(f"  {METHODS[name].describe()}")
    with progress(total_runs(tasks, methods, protocol), "convergence") as update:
        outcomes = run_suite(tasks, methods, protocol, args.jobs, update)
    print()
    print(report(outcomes))
    folder = out_dir(args.out)
    raw = [
        {"task": o.task, "method": o.method, "lr": o.lr, "runs": [_raw(r) for r in o.grid + o.runs]}
        for o in outcomes
    ]
    (folder / "convergence.json").write_text(json.dumps(raw, indent=1))
    print(f"\nplot: {plot(outcomes, tasks, methods, folder / 'convergence.png')}")
    print(f"raw results: {folder / 'convergence.json'}")
    return 0


def _raw(result: Any) -> dict[str, Any]:
    return {
        **asdict(result.key),
        "iterations": result.iterations,
        "loss": finite_or_text(result.loss),
        "test_accuracy": result.test_accuracy,
        "diverged": result.diverged,
        "seconds": result.seconds,
    }


def report(outcomes: list[Any]) -> str:
    """The table, and the verdict on the targets for the default optimizer."""
    from ..experiments.convergence import TASKS, iterations_ratio

    sgd = {o.task: o for o in outcomes if o.method == "SGD"}
    rows = []
    for o in outcomes:
        seeds = len(o.runs)
        rows.append(
            [
                o.task,
                o.method,
                o.lr,
                f"{o.grid_diverged}/{len(o.grid)}",
                f"{o.seeds_diverged}/{seeds}",
                o.final_loss,
                o.test_accuracy,
                _ratio(iterations_ratio(o, sgd[o.task])),
            ]
        )
    headers = [
        "task",
        "optimizer",
        "lr",
        "diverged (grid)",
        "diverged (seeds)",
        "final train loss",
        "test accuracy",
        "iterations to SGD's final loss (x SGD)",
    ]
    lines = [table(headers, rows)]
    mine = [o for o in outcomes if o.method == DEFAULT_LABEL]
    if mine:
        runs = sum(len(o.runs) for o in mine)
        real = [o for o in mine if TASKS[o.task].real_data]
        ratios = {o.task: iterations_ratio(o, sgd[o.task]) for o in real}
        fast = [task for task, r in ratios.items() if r <= 0.7]
        worst = max(ratios.values(), default=math.nan)
        grid_mine = sum(o.grid_diverged for o in mine)
        grid_sgd = sum(sgd[o.task].grid_diverged for o in mine)
        lines += [
            "",
            f"{DEFAULT_LABEL} (the defaults): {sum(o.seeds_diverged for o in mine)} divergences "
            f"in {runs} evaluation runs; reaches SGD's final loss in <= 0.7x SGD's iterations "
            f"on {len(fast)} of {len(real)} real-data tasks {fast}; largest ratio on real data "
            f"{worst:.3g}; diverged grid points {grid_mine} (SGD {grid_sgd})",
        ]
    return "\n".join(lines)


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "never" if math.isinf(value) else f"{value:.2f}"


def plot(outcomes: list[Any], tasks: list[str], methods: list[str], path: Path) -> Path:
    """Median training loss against iterations, one panel per task; x marks a divergence."""
    import numpy as np

    plt = pyplot()
    columns = min(4, len(tasks) + 1)
    rows = -(-(len(tasks) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    by_key = {(o.task, o.method): o for o in outcomes}
    for ax, task in zip(axes.flat, tasks, strict=False):
        for method in methods:
            o = by_key[(task, method)]
            stable = [r for r in o.runs if not r.diverged]
            if stable:
                curve = np.median(np.array([r.loss for r in stable]), axis=0)
                ax.plot(stable[0].iterations, curve, color=colors[method], label=method)
            for r in o.runs:
                if r.diverged:
                    finite = [
                        (i, v)
                        for i, v in zip(r.iterations, r.loss, strict=True)
                        if math.isfinite(v)
                    ]
                    i, v = finite[-1]
                    ax.plot([i], [v], "x", color=colors[method], markersize=8, mew=2)
        ax.set_yscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    legend_ax = axes.flat[len(tasks)]
    handles = [plt.Line2D([], [], color=colors[m], label=m) for m in methods]
    handles.append(plt.Line2D([], [], color="k", marker="x", linestyle="", label="diverged run"))
    legend_ax.legend(handles=handles, loc="center", fontsize=9, frameon=False)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    seeds = sorted({r.key.seed for o in outcomes for r in o.runs})
    fig.suptitle(f"convergence suite: median training loss over seeds {seeds} at the tuned lr")
    return save(fig, path)
