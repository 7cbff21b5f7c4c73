"""Driver of ``scripts/mutation``: mutmut per area, in scratch copies, and a summary table.

Each area names the files it mutates and a fast test selection (mutmut 3 then runs, for
each mutant, only the selected tests that executed the mutated function). Surviving
mutants judged equivalent are listed in docs/testing.md ("Surviving mutants"), one table
row each: ``| `function` | `mutated line` | why |``; the score counts them apart.

``--sample N`` tests a seeded uniform sample of N of each area's mutants instead of all of
them, for an area whose full run does not fit a session (the core: about 10 hours here),
and reports the score with its 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".mutation"
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
DOCS = ROOT / "docs" / "testing.md"


@dataclass(frozen=True)
class Area:
    mutate: tuple[str, ...]
    tests: tuple[str, ...]
    isolation: str = "forkserver"
    """Where each mutant's tests are forked from. mutmut's ``"fork"`` forks its main
    process, which has run the whole selection to collect stats, so torch's and JAX's
    threads are gone in the child while their locks stay held: a child can hang on one,
    use no CPU, and be killed by the wall-clock limit, which mutmut counts as a kill
    (seen on the core area: children asleep in ``futex_do_wait`` for ten minutes)."""


CORE_TESTS = (
    "tests/core/test_damping.py",
    "tests/core/test_preconditioner.py",
    "tests/engine/test_semantics.py",
    "tests/core/test_lemmas.py",
    "tests/engine/test_nonfinite.py",
    "tests/core/test_partition.py",
    "tests/core/test_pieces.py",
    "tests/engine/test_validation.py",
    "tests/engine/test_guarantees.py",
    "tests/core/test_config.py",
    "tests/core/test_step_norm.py",
    "tests/engine/test_report.py",
    "tests/engine/test_engine.py",
    "tests/backends/test_array_api_strict.py",
    "tests/backends/test_kernels.py",
    "tests/backends/test_trajectories.py",
    "tests/engine/test_reliability.py",  # half precision: the float32-accumulating kernels
    "tests/core/test_history.py",
    "tests/engine/test_history_dtype.py",
    "tests/core/test_initial_matrix.py",  # h0="adam"
    "tests/core/test_averages.py",
    "tests/jax/test_functional.py",  # the pure step (core/functional.py, pure_*.py)
    # Not tests/core/test_two_shapes.py: it reads function names from the call stack,
    # where mutmut's trampolines rename every function.
)
AREAS = {
    "core": Area(("mlbfgs/core/*",), CORE_TESTS),
    # The history's storage end to end: ring buffer, kernels, compact form, state codec.
    "storage": Area(
        (
            "mlbfgs/core/history.py",
            "mlbfgs/core/kernels.py",
            "mlbfgs/core/preconditioner.py",
            "mlbfgs/engine/state.py",
        ),
        (*CORE_TESTS, "tests/engine/test_state.py"),
    ),
    "optimizer": Area(
        ("mlbfgs/engine/optimizer.py", "mlbfgs/engine/loading.py"),
        (
            *CORE_TESTS,
            "tests/engine/test_state.py",
            "tests/engine/test_distributed.py",
            "tests/comm/test_collectives.py",
        ),
    ),
    "checkpoint": Area(
        ("mlbfgs/checkpoint/sharded.py",),
        (
            "tests/engine/test_state.py",
            "tests/checkpoint/test_paths.py",
            "tests/engine/test_engine.py",
            "tests/engine/test_distributed.py",
            "tests/comm/test_collectives.py",
            "tests/engine/test_guarantees.py",
            "tests/backends/test_array_api_strict.py",
            "tests/torch/test_torch_optimizer.py",
            "tests/torch/test_torch_guarantees.py",
        ),
    ),
    "torch": Area(
        ("mlbfgs/torch/optimizer.py",),
        (
            "tests/torch/test_torch_optimizer.py",
            "tests/torch/test_torch_errors.py",
            "tests/torch/test_torch_guarantees.py",
        ),
    ),
}
# Never under mutation testing: launches other processes (mutants do not reach them),
# trains a real model for seconds, or compiles with XLA (the jitted, eager-JAX and
# many-device tests of the pure step: 30 s of every mutant of a function the pure step
# calls, while the pure step on NumPy, selected, runs the same core functions in 1 s).
DESELECT = (
    "not torch_cnn_example and not cuda and not cupy"
    " and not jax_update and not jitted and not four_devices"
)


def scratch_copy(area: str, spec: Area) -> Path:
    """The working tree's mlbfgs/, tests/ and pyproject.toml, plus the mutmut config."""
    where = SCRATCH / area
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "mlbfgs", "tests", "pyproject.toml"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
    tests = [t for t in spec.tests if (where / t).exists()]
    config = {
        "source_paths": ["mlbfgs"],
        "only_mutate": list(spec.mutate),
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x", "-k", DESELECT],
        "process_isolation": spec.isolation,
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    with open(where / "pyproject.toml", "a") as out:
        out.write("\n".join(lines) + "\n")
    return where


def mutmut(where: Path, *args: str, log: Path | None = None) -> str:
    env = {
        **os.environ,
        "MLBFGS_HYPOTHESIS": "pinned",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    if log is None:
        return subprocess.run(
            [str(MUTMUT), *args], cwd=where, env=env, check=True, capture_output=True, text=True
        ).stdout
    with open(log, "w") as out:
        subprocess.run([str(MUTMUT), *args], cwd=where, env=env, check=True, stdout=out, stderr=out)
    return ""


def equivalents() -> set[tuple[str, str]]:
    """(function, mutated line) of every mutant docs/testing.md lists as equivalent."""
    found = set()
    if DOCS.exists():
        for line in DOCS.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and cells[0].startswith("`mlbfgs."):
                found.add((cells[0].strip("`"), cells[1].strip("`").replace("\\|", "|")))
    return found


def function_of(mutant: str) -> str:
    """``mlbfgs.core.damping.x_damp__mutmut_3`` -> ``mlbfgs.core.damping.damp``;
    methods (``xǁClassǁmethod``) -> ``mlbfgs.core.history.Class.method``."""
    name = re.sub(r"__mutmut_\d+$", "", mutant)
    module, _, func = name.rpartition(".")
    if func.startswith("xǁ"):  # a method: xǁClassǁmethod
        func = func[2:].replace("ǁ", ".")
    elif func.startswith("x_"):
        func = func[2:]
    return f"{module}.{func}"


def mutated_lines(diff: str) -> str:
    plus = [line[1:].strip() for line in diff.splitlines() if line.startswith("+")]
    plus = [line for line in plus if not line.startswith("++")]
    return " / ".join(plus) if plus else "(line removed)"


GENERATE = """
import os
import mutmut.__main__ as m
os.makedirs("mutants", exist_ok=True)
m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths(); m.store_lines_covered_by_tests()
m.create_mutants(1)
"""
"""mutmut 3.8.1's generation step alone (the first lines of its ``run``), so that a sample
can be drawn from the mutants' names before any is tested; ``run`` then finds them made."""


def all_mutants(where: Path) -> list[str]:
    """Every mutant's name, from the ``.meta`` file mutmut writes next to each mutated one."""
    names = []
    for meta in sorted((where / "mutants").rglob("*.meta")):
        names += json.loads(meta.read_text())["exit_code_by_key"]
    return sorted(names)


def sample_of(where: Path, size: int, seed: int) -> list[str]:
    """``size`` mutants drawn uniformly without replacement with ``random.Random(seed)``."""
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", GENERATE],
        cwd=where,
        check=True,
        capture_output=True,
    )
    names = all_mutants(where)
    return sorted(random.Random(seed).sample(names, min(size, len(names))))


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (sound near 0 and 1, unlike p +- 2 se)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return centre - half / (1 + z * z / trials), centre + half / (1 + z * z / trials)


@dataclass(frozen=True)
class AreaResult:
    area: str
    killed: int
    timeouts: int
    """Of ``killed``: ended by the time limit rather than by a failing test."""
    survived: int
    not_checked: int
    equivalent: int
    unexplained: int
    minutes: float

    def row(self) -> str:
        """The summary table's row; the score is over the tested non-equivalent mutants."""
        judged = self.killed + self.survived - self.equivalent
        low, high = wilson(self.killed, judged)
        score = 100.0 * self.killed / judged if judged else 100.0
        return (
            f"| {self.area} | {self.killed + self.survived + self.not_checked} | "
            f"{self.killed} ({self.timeouts} by timeout) | "
            f"{self.survived} | {self.equivalent} | {score:.1f}% | "
            f"{100 * low:.1f}-{100 * high:.1f}% | {self.minutes:.0f} |"
        )


def run_area(area: str, spec: Area, jobs: int, sample: int | None, seed: int) -> AreaResult:
    where = scratch_copy(area, spec)
    started = time.monotonic()
    chosen = sample_of(where, sample, seed) if sample else []
    what = f"a sample of {len(chosen)} (seed {seed})" if chosen else "every mutant"
    print(f"[{area}] mutating {', '.join(spec.mutate)} in {where}: {what}", flush=True)
    mutmut(where, "run", "--max-children", str(jobs), *chosen, log=where / "run.log")
    known = equivalents()
    counts = {"killed": 0, "timeouts": 0, "survived": 0, "not checked": 0}
    survivors: list[tuple[str, str, tuple[str, str], str]] = []
    equivalent: list[tuple[str, str, tuple[str, str], str]] = []
    wanted = set(chosen)
    for line in mutmut(where, "results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name or (wanted and name not in wanted) or status == "skipped":
            continue
        if status in ("killed", "timeout", "segfault"):
            counts["killed"] += 1
            counts["timeouts"] += status == "timeout"
        elif status in ("survived", "no tests"):
            counts["survived"] += 1
            diff = mutmut(where, "show", name)
            key = (function_of(name), mutated_lines(diff))
            (equivalent if key in known else survivors).append((name, status, key, diff))
        else:
            counts["not checked"] += 1
    with open(where / "survivors.md", "w") as out:
        sections = (("Not yet explained", survivors), ("Listed as equivalent", equivalent))
        for title, items in sections:
            out.write(f"## {title} ({len(items)})\n\n")
            for name, status, (func, mutated), diff in items:
                out.write(f"### {name} ({status})\n`{func}` | `{mutated}`\n\n")
                out.write(f"```diff\n{diff}\n```\n\n")
    return AreaResult(
        area + (f" (sample of {len(chosen)}, seed {seed})" if chosen else ""),
        counts["killed"],
        counts["timeouts"],
        counts["survived"],
        counts["not checked"],
        len(equivalent),
        len(survivors),
        (time.monotonic() - started) / 60,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="mutation testing by area (docs/testing.md)")
    parser.add_argument("areas", nargs="*", help=f"areas, default all: {' '.join(AREAS)}")
    parser.add_argument("--sample", type=int, help="test N mutants of each area, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    args = parser.parse_args()
    unknown = [a for a in args.areas if a not in AREAS]
    if unknown:
        parser.error(f"unknown area(s) {unknown}; choose from {list(AREAS)}")
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample must be a positive number of mutants, got {args.sample}")
    jobs = int(os.environ.get("MLBFGS_MUTATION_JOBS", "2"))
    areas = args.areas or list(AREAS)
    rows = [run_area(area, AREAS[area], jobs, args.sample, args.seed) for area in areas]
    header = (
        "| area | mutants | killed | survived | of which listed equivalent | "
        "score (killed / non-equivalent) | 95% interval | minutes |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *(r.row() for r in rows)])
    (SCRATCH / "summary.md").write_text(table + "\n")
    print(table)
    for r, area in zip(rows, areas, strict=True):
        if r.not_checked:
            print(f"{area}: {r.not_checked} mutant(s) not checked (stopped, or suspicious)")
        if r.unexplained:
            print(
                f"{area}: {r.unexplained} survivor(s) not listed in docs/testing.md: "
                f"see .mutation/{area}/survivors.md"
            )


if __name__ == "__main__":
    main()
