"""The ``mlbfgs`` command line (also ``python -m mlbfgs``).

``demo`` trains one network with mL-BFGS, SGD, Adam and vanilla stochastic L-BFGS;
``reproduce`` runs the paper's Figure 1 and Figure 5 experiments; ``bench`` measures the
step against the two-loop recursion, the machine's copy bandwidth and an SGD step;
``info`` reports the version, backends, MPI library and GPUs. Every subcommand has a
``--quick`` mode with tiny sizes, used by the tests.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"mlbfgs {args.command}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
