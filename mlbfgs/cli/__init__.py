"""The ``mlbfgs`` command line (also ``python -m mlbfgs``).

``demo`` trains one network with mL-BFGS, SGD, Adam and vanilla stochastic L-BFGS;
``reproduce fig1`` and ``reproduce ablation`` run the paper's Figure 1 and Figure 5
experiments; ``bench`` measures the step against the two-loop recursion, the machine's
copy bandwidth and an SGD step; ``info`` reports the version, backends, MPI library and
GPUs. Every subcommand has a ``--quick`` mode with tiny sizes, used by the tests.

Each leaf parser sets three defaults: ``check`` validates what argparse cannot (the
output folder, optional packages) before any work, ``run`` does the work, and ``parser``
is the leaf itself, so that errors come with the subcommand's own usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..extras import MissingExtraError
from . import bench, demo, info, reproduce

COMMANDS = {"demo": demo, "reproduce": reproduce, "bench": bench, "info": info}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlbfgs",
        description="mL-BFGS: momentum-based, damped, block-diagonal stochastic L-BFGS.",
    )
    parser.add_argument("--version", action="version", version=f"mlbfgs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and range-check the arguments (exits 2 with the right usage on an error)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    leaf = getattr(args, "parser", parser)
    if unknown:
        leaf.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parse(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        args.check(args)
        return int(args.run(args))
    except (MissingExtraError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"{args.parser.prog}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main", "parse"]
