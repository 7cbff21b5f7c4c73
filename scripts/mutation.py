"""Driver of ``scripts/mutation``: mutmut per area, in scratch copies, and a summary table.

Each area names the files it mutates and a fast test selection (mutmut 3 then runs, for
each mutant, only the selected tests that executed the mutated function). Surviving
mutants judged equivalent are listed in docs/testing.md ("Surviving mutants"), one table
row each: ``| `function` | `mutated line` | why |``; the score counts them apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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
    isolation: str = "fork"


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
    "tests/core/test_core_contracts.py",
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
        (*CORE_TESTS, "tests/engine/test_state.py", "tests/engine/test_engine.py"),
    ),
    "optimizer": Area(
        ("mlbfgs/engine/optimizer.py", "mlbfgs/engine/loading.py"),
        (
            *CORE_TESTS,
            "tests/engine/test_state.py",
            "tests/engine/test_distributed.py",
            "tests/comm/test_collectives.py",
            "tests/engine/test_engine.py",
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
        isolation="forkserver",  # torch is not fork-safe once its thread pools exist
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


def run_area(area: str, spec: Area, jobs: int) -> dict[str, object]:
    where = scratch_copy(area, spec)
    started = time.monotonic()
    print(f"[{area}] mutating {', '.join(spec.mutate)} in {where}", flush=True)
    mutmut(where, "run", "--max-children", str(jobs), log=where / "run.log")
    mutmut(where, "export-cicd-stats")
    stats = json.loads((where / "mutants" / "mutmut-cicd-stats.json").read_text())
    known = equivalents()
    survivors, equivalent = [], []
    for line in mutmut(where, "results").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if status not in ("survived", "no tests"):
            continue
        diff = mutmut(where, "show", name)
        key = (function_of(name), mutated_lines(diff))
        (equivalent if key in known else survivors).append((name, status, key, diff))
    with open(where / "survivors.md", "w") as out:
        sections = (("Not yet explained", survivors), ("Listed as equivalent", equivalent))
        for title, items in sections:
            out.write(f"## {title} ({len(items)})\n\n")
            for name, status, (func, mutated), diff in items:
                out.write(f"### {name} ({status})\n`{func}` | `{mutated}`\n\n")
                out.write(f"```diff\n{diff}\n```\n\n")
    total = int(stats["total"]) - int(stats["skipped"])
    killed = int(stats["killed"]) + int(stats["timeout"]) + int(stats["segfault"])
    return {
        "area": area,
        "mutants": total,
        "killed": killed,
        "survived": int(stats["survived"]) + int(stats["no_tests"]),
        "equivalent": len(equivalent),
        "unexplained": len(survivors),
        "minutes": (time.monotonic() - started) / 60,
    }


def main() -> None:
    areas = sys.argv[1:] or list(AREAS)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        sys.exit(f"unknown area(s) {unknown}; choose from {list(AREAS)}")
    jobs = int(os.environ.get("MLBFGS_MUTATION_JOBS", "2"))
    rows = [run_area(area, AREAS[area], jobs) for area in areas]
    header = (
        "| area | mutants | killed | survived | of which listed equivalent | "
        "score (killed / non-equivalent) | minutes |\n|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for r in rows:
        denominator = int(r["mutants"]) - int(r["equivalent"])
        score = 100.0 * int(r["killed"]) / denominator if denominator else 100.0
        lines.append(
            f"| {r['area']} | {r['mutants']} | {r['killed']} | {r['survived']} | "
            f"{r['equivalent']} | {score:.1f}% | {float(r['minutes']):.0f} |"
        )
    table = "\n".join(lines)
    (SCRATCH / "summary.md").write_text(table + "\n")
    print(table)
    for r in rows:
        if r["unexplained"]:
            print(
                f"{r['area']}: {r['unexplained']} survivor(s) not listed in docs/testing.md: "
                f"see .mutation/{r['area']}/survivors.md"
            )


if __name__ == "__main__":
    main()
