"""The output blocks the docs quote are generated (scripts/docblocks.py): the deterministic
ones must match what the code prints now, timed table columns excepted.

The cheap blocks run here (fig1 and ablation in-process, benchmark scripts such as
benchmarks/balance.py as subprocesses); the slow ones (the demo runs,
about half a minute each) are compared by ``./scripts/results --check``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import docblocks  # noqa: E402

BLOCKS = [b for path in docblocks.doc_files() for b in docblocks.find_blocks(path)]
CHECKED = [b for b in BLOCKS if b.deterministic and not b.slow]

TABLE = """\
| optimizer | iterations | ms / iteration |
|-----------|------------|----------------|
| SGD       | 60         | 3.46           |"""


def test_the_cheap_deterministic_blocks_cover_fig1_and_ablation() -> None:
    commands = " ".join(b.command for b in CHECKED)
    assert "reproduce fig1" in commands and "reproduce ablation" in commands


def _printed(block: docblocks.Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What the block's command prints now (an mlbfgs command in-process, writing its plot
    into ``tmp_path``; a benchmark script as a subprocess)."""
    from mlbfgs.cli import main

    program, *argv = shlex.split(block.command)
    if program == ".venv/bin/python":  # a benchmark script that prints without writing
        return docblocks.run(block.command.replace(program, shlex.quote(sys.executable), 1))
    assert program == ".venv/bin/mlbfgs", "only mlbfgs and python commands are checked here"
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(tmp_path)  # never overwrite docs/img from a test
    assert main(argv) == 0
    return capsys.readouterr().out.replace(str(tmp_path), out)


@pytest.mark.parametrize("block", CHECKED, ids=[b.command.split("mlbfgs ")[-1] for b in CHECKED])
def test_deterministic_block_matches_the_code(
    block: docblocks.Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    printed = _printed(block, tmp_path, capsys)
    assert docblocks.differences(block, printed) == "", "run ./scripts/results to update"


# The blocks whose numbers come out of floating-point training runs; the benchmark
# scripts' blocks hold counts and ratios of counts, which no rounding changes.
TRAINED = [b for b in CHECKED if b.command.startswith(".venv/bin/mlbfgs ")]
TRAINED_IDS = [b.command.split("mlbfgs ")[-1] for b in TRAINED]


def _one_ulp_up(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """What differs between machines: the last bit of a BLAS product (OpenBLAS picks its
    kernels by processor). Every ``W g`` product of the step, and the NumPy MLP's initial
    weights, move one ulp up in a random half of their entries."""
    from mlbfgs.core.kernels import Kernels
    from mlbfgs.experiments.numpy_mlp import NumpyMLP

    rng = np.random.default_rng(seed)
    project, init = Kernels.project, NumpyMLP.__init__

    def nudge(x: np.ndarray) -> np.ndarray:
        return np.where(rng.random(x.shape) < 0.5, np.nextafter(x, np.inf), x)

    def nudged_project(self: Kernels, pairs: np.ndarray, g: np.ndarray) -> np.ndarray:
        return nudge(project(self, pairs, g))

    def nudged_init(self: NumpyMLP, *args: int) -> None:
        init(self, *args)
        self.params = [nudge(p) for p in self.params]

    monkeypatch.setattr(Kernels, "project", nudged_project)
    monkeypatch.setattr(NumpyMLP, "__init__", nudged_init)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("block", TRAINED, ids=TRAINED_IDS)
def test_one_ulp_leaves_every_comparison_green(
    block: docblocks.Block,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The comparison holds on a machine whose products round differently: the ablation's
    diverging runs end anywhere from 1.6 to 65 under such nudges, its stable full run
    within 10% of the docs (hence its marker's 25%)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    _one_ulp_up(monkeypatch, seed)
    printed = _printed(block, tmp_path, capsys)
    assert docblocks.differences(block, printed) == ""


@pytest.mark.parametrize("block", TRAINED, ids=TRAINED_IDS)
def test_a_wrong_constant_turns_the_comparison_red(
    block: docblocks.Block,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """...and still catches a real change: Eq (5)'s weight 1 - beta taken 10% too large."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from mlbfgs.core.kernels import Kernels

    lerp_all = Kernels.lerp_all_

    def wrong(self: Kernels, averages: list[np.ndarray], xs: list[np.ndarray], w: float) -> None:
        lerp_all(self, averages, xs, min(1.0, 1.1 * w) if w < 1 else 0.9)

    monkeypatch.setattr(Kernels, "lerp_all_", wrong)
    printed = _printed(block, tmp_path, capsys)
    assert docblocks.differences(block, printed) != ""


def test_timed_columns_are_not_compared() -> None:
    rules = docblocks.Rules(ignored=("ms / iteration",))
    block = docblocks.Block(Path("x.md"), 0, 5, "true", TABLE, True, False, rules)
    slower = TABLE.replace("3.46           |", "12.5           |")
    assert docblocks.differences(block, slower) == ""
    assert "-| SGD | 60 | * |" in docblocks.differences(block, slower.replace("60 ", "70 "))


LOSSES = """\
| run | loss | pairs | spread |
|---|---|---|---|
| stable | 0.0100 | 59 | 0.001 |
| diverged | 41.9 | 37 | 0.8 |"""


@pytest.mark.parametrize(
    ("printed", "same"),
    [
        (LOSSES.replace("0.0100", "0.0124").replace("0.001 ", "0.009 "), True),
        (LOSSES.replace("0.0100", "0.0126"), False),  # beyond 25%
        (LOSSES.replace("| 59", "| 58"), False),  # counts of a stable run are exact
        (LOSSES.replace("41.9 | 37 | 0.8", "1.5 | 51 | 9"), True),  # diverged: only "> 1"
        (LOSSES.replace("41.9 | 37 | 0.8", "1.5 | 51 | 9").replace("diverged | ", "d | "), False),
        (LOSSES.replace("41.9", "0.9"), False),  # did not diverge
        (LOSSES.replace("stable | 0.0100", "stable | 2.0"), False),  # diverged, unlike docs
        (LOSSES.replace("| run |", "| name |"), False),  # headers are text
    ],
)
def test_tolerances_and_divergence_are_compared_per_column(printed: str, same: bool) -> None:
    spec = (
        "deterministic; within 25%: loss; diverged above 1: loss; after divergence: pairs; "
        "not compared: spread"
    )
    deterministic, slow, rules = docblocks.parse_marker(spec)
    block = docblocks.Block(Path("x.md"), 0, 5, "true", LOSSES, deterministic, slow, rules)
    assert (docblocks.differences(block, printed) == "") == same


def test_blocks_are_found_run_and_rewritten(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n<!-- generated: measured -->\n```\n$ echo old\nold\n```\n"
        "<!-- generated: deterministic; slow; timed columns: a, b -->\n```\n$ printf 'x\\ny'\n"
        "x\n```\nmore text\n"
    )
    first, second = docblocks.find_blocks(doc)
    assert (first.command, first.output, first.deterministic) == ("echo old", "old", False)
    assert (second.slow, second.rules.ignored, second.output) == (True, ("a", "b"), "x")
    assert docblocks.run(second.command) == "x\ny"
    docblocks.rewrite(doc, {second.fence: "x\ny"})
    assert "$ printf 'x\\ny'\nx\ny\n```\nmore text\n" in doc.read_text()
    assert docblocks.find_blocks(doc)[0].output == "old"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- generated: measured -->\n\n```\n$ true\n```\n", "must precede"),
        ("<!-- generated: exact -->\n```\n$ true\n```\n", "deterministic or measured"),
        ("<!-- generated: measured; fast -->\n```\n$ true\n```\n", "unknown option"),
        ("<!-- generated: measured; within 5: a -->\n```\n$ true\n```\n", "unknown option"),
    ],
)
def test_malformed_markers_are_errors(tmp_path: Path, text: str, message: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(ValueError, match=message):
        docblocks.find_blocks(doc)
