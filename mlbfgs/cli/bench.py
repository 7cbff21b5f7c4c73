"""``mlbfgs bench``: the step's cost as ratios measured in one run.

(1) ``H g`` by the compact form (what ``step`` uses) against the classic two-loop
recursion, and its effective bandwidth (bytes = 4 M n itemsize) against ``np.copyto``'s
measured copy bandwidth (bytes = read + write); (2) a whole training iteration (forward,
backward, step) of the demo model with mL-BFGS against SGD with momentum; (3) the
optimizer's peak NumPy memory against the ``2 M n`` values of its history.
Targets: compact >= 3x the two-loop and >= 70% of copy bandwidth at n = 2e6, M = 10,
float32; mL-BFGS iteration <= 1.15x SGD.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from typing import Any

from .common import add_common, plain, positive_int, progress, require_all, table

FULL_SIZES = [100_000, 1_000_000, 2_000_000, 10_000_000]
FULL_HISTORIES = [5, 10, 20]
TARGET = (2_000_000, 10)
COPY_BYTES = 256 << 20
COST = """
Cost, measured with /usr/bin/time -v on the project's 2-core machine while other jobs
shared it: the defaults took 2 min 50 s (load average 3) to 4 min 10 s (load 7) and
peaked at 2.6 GB resident (part (1) at n = 1e7, M = 20 holds a 1.6 GB history);
--max-n 2e6 took 3 min 40 s and 1.2 GB, --quick 9 s and 0.4 GB (both at load 6).
Before it starts, part (1) checks that its memory estimate fits in what the machine
has available.
"""


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "bench",
        help="preconditioner vs two-loop vs bandwidth; iteration vs SGD; memory vs 2Mn",
        description=plain(__doc__) + COST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--parts", type=parts, default="1,2,3", help="which parts to run, e.g. 1,3 (1,2,3)"
    )
    parser.add_argument(
        "--max-n", type=max_n, default=1e7, help="largest n in part (1), >= 1e5 (1e7)"
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads in part (2)")
    parser.add_argument(
        "--blas-threads", type=positive_int, help="limit BLAS threads (threadpoolctl)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default="64,256",
        help="part (2); the first is the target's (64,256)",
    )
    add_common(parser, "tiny sizes, a few seconds (for tests)", out=False)
    parser.set_defaults(run=run, check=check, parser=parser)


def parts(text: str) -> frozenset[str]:
    """argparse type for --parts: a comma-separated subset of 1, 2, 3."""
    chosen = frozenset(p.strip() for p in text.split(",") if p.strip())
    if not chosen or not chosen <= {"1", "2", "3"}:
        raise argparse.ArgumentTypeError(f"must list some of 1, 2, 3, got {text!r}")
    return chosen


def max_n(text: str) -> float:
    """argparse type for --max-n: at least the smallest size of part (1)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= FULL_SIZES[0]:
        raise argparse.ArgumentTypeError(f"must be a number >= 1e5, got {text!r}")
    return value


def batch_sizes(text: str) -> list[int]:
    """argparse type for --batch-sizes: comma-separated integers >= 1."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"must be integers >= 1 like 64,256, got {text!r}")
    return sizes


def part1_bytes(largest_n: float, quick: bool) -> int:
    """Part (1)'s peak: the largest (2M, n) float32 history, the copy probe's two buffers
    and a few n-vectors."""
    if quick:
        return 0
    n = max(size for size in FULL_SIZES if size <= largest_n)
    return 8 * max(FULL_HISTORIES) * n + 2 * COPY_BYTES + 16 * n


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check(args: argparse.Namespace) -> None:
    """Packages, and part (1)'s memory against what the machine has free, before any work."""
    needs = ["tqdm"]
    if "2" in args.parts:
        needs += ["torch", "sklearn.datasets"]
    if args.blas_threads is not None:
        needs.append("threadpoolctl")
    require_all(needs)
    need, free = part1_bytes(args.max_n, args.quick), available_bytes()
    if "1" in args.parts and free is not None and need > free:
        raise ValueError(
            f"part (1) with --max-n {int(args.max_n):,} needs about {need / 1e9:.1f} GB, but only "
            f"{free / 1e9:.1f} GB are available; use a smaller --max-n"
        )


def run(args: argparse.Namespace) -> int:
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.blas_threads, user_api="blas"):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    if "1" in args.parts:
        preconditioner(args)
    if "2" in args.parts:
        iteration(args)
    if "3" in args.parts:
        memory(args)
    return 0


def preconditioner(args: argparse.Namespace) -> None:
    from ..experiments.bench import CopyProbe, preconditioner_row

    sizes = [1_000, 20_000] if args.quick else [n for n in FULL_SIZES if n <= args.max_n]
    histories = [2, 5] if args.quick else FULL_HISTORIES
    probe = CopyProbe(4 << 20 if args.quick else COPY_BYTES)
    print(
        f"(1) preconditioner H g, float32; bytes = 4 M n 4; copy = np.copyto of "
        f"{probe.src.nbytes >> 20} MiB (read + write), timed in turn; {_environment()}"
    )
    rows, results = [], []
    with progress(len(sizes) * len(histories), "preconditioner") as update:
        for n in sizes:
            for m in histories:
                rounds = 5 if n * m >= 50_000_000 else 15
                r = preconditioner_row(n, m, probe, rounds)
                results.append(r)
                rows.append(
                    [
                        f"{n:.0e}".replace("e+0", "e"),
                        m,
                        1e3 * r.compact_s,
                        1e3 * r.two_loop_s,
                        r.speedup,
                        r.copy_bandwidth / 1e9,
                        r.bandwidth_fraction,
                        r.max_rel_diff,
                    ]
                )
                update(1)
    headers = ["n", "M", "compact ms", "two-loop ms", "two-loop / compact", "copy GB/s"]
    print(table([*headers, "compact / copy bandwidth", "max rel diff"], rows))
    at = [r for r in results if (r.n, r.m) == TARGET]
    if at:
        r = at[0]
        print(
            f"target at n=2e6, M=10: two-loop/compact = {r.speedup:.2f} (>= 3: "
            f"{'met' if r.speedup >= 3 else 'MISSED'}), bandwidth fraction = "
            f"{r.bandwidth_fraction:.2f} (>= 0.70: "
            f"{'met' if r.bandwidth_fraction >= 0.7 else 'MISSED'})"
        )
    print()


def _environment() -> str:
    """What the timings depend on: BLAS threads and the load of the machine."""
    import os

    threads = "?"
    try:
        from threadpoolctl import threadpool_info

        threads = ",".join(
            str(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"
        )
    except ImportError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"BLAS threads {threads}, {os.cpu_count()} CPUs, load average {load}"


def iteration(args: argparse.Namespace) -> None:
    import torch

    from ..core import MLBFGSConfig
    from ..data import load
    from ..experiments.models import parameter_count, seeded_model
    from ..experiments.training import recommended_specs, time_iterations

    torch.set_num_threads(args.threads)
    dataset = load("digits")
    sgd_spec, demo_spec = [s for s in recommended_specs() if s.label in ("SGD", "mL-BFGS")][::-1]
    if args.quick:
        demo_spec = replace(demo_spec, options={**demo_spec.options, "update_every": 2})
    specs = [sgd_spec, demo_spec]
    # Enough steps to fill the history, so the timed steps precondition with M pairs.
    config = MLBFGSConfig(**demo_spec.options)
    warmup = (config.history_size + 3) * config.update_every
    rounds, per_round = (3, 3) if args.quick else (15, 40)
    batches = [16] if args.quick else args.batch_sizes
    params = parameter_count(seeded_model(dataset.image_shape, dataset.classes, 0))
    print(
        f"(2) whole iteration (forward, backward, step), demo CNN ({params} parameters) on "
        f"digits, torch threads {args.threads}; per batch size {rounds} interleaved rounds of "
        f"{per_round} iterations after {warmup} warm-up steps; {_environment()}"
    )
    for spec in specs[1:]:
        print(f"  {spec.describe()}")
    rows, verdict = [], ""
    with progress(len(batches), "iteration") as update:
        for batch in batches:
            times = time_iterations(
                specs,
                dataset,
                batch_size=batch,
                warmup_steps=warmup,
                rounds=rounds,
                per_round=per_round,
            )
            update(1)
            sgd = statistics.median(times["SGD"])
            for spec in specs:
                ratios = [a / b for a, b in zip(times[spec.label], times["SGD"], strict=True)]
                median = statistics.median(ratios)
                rows.append(
                    [
                        batch,
                        spec.label,
                        1e3 * statistics.median(times[spec.label]),
                        median,
                        min(ratios),
                        max(ratios),
                    ]
                )
                if spec is demo_spec and batch == batches[0]:
                    verdict = (
                        f"target at batch {batch} with the demo's settings: {median:.3f} "
                        f"(<= 1.15: {'met' if median <= 1.15 else 'MISSED'}); "
                        f"SGD takes {1e3 * sgd:.2f} ms"
                    )
    print(
        table(
            [
                "batch",
                "optimizer",
                "median ms / iteration",
                "ratio to SGD (median of rounds)",
                "min",
                "max",
            ],
            rows,
        )
    )
    print(verdict)
    print()


def memory(args: argparse.Namespace) -> None:
    from ..experiments.bench import memory_row

    n = 10_000 if args.quick else 1_000_000
    histories = [2, 5] if args.quick else FULL_HISTORIES
    rows = []
    with progress(len(histories), "memory") as update:
        for m in histories:
            r = memory_row(n, m)
            rows.append(
                [n, m, r.peak_bytes / 1e6, r.history_bytes / 1e6, r.peak_ratio, r.state_ratio]
            )
            update(1)
    print(
        "(3) optimizer memory (NumPy, float32, one block; tracemalloc of everything the "
        "optimizer allocates, parameters and gradients excluded)"
    )
    print(table(["n", "M", "peak MB", "2Mn MB", "peak / 2Mn", "kept after step / 2Mn"], rows))
    print()
