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

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize("block", CHECKED, ids=[b.command.split("mlbfgs ")[-1] for b in CHECKED])
def test_deterministic_block_matches_the_code(
    block: docblocks.Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from mlbfgs.cli import main

    program, *argv = shlex.split(block.command)
    if program == ".venv/bin/python":  # a benchmark script that prints without writing
        printed = docblocks.run(block.command.replace(program, shlex.quote(sys.executable), 1))
        assert docblocks.differences(block, printed) == "", "run ./scripts/results to update"
        return
    assert program == ".venv/bin/mlbfgs", "only mlbfgs and python commands are checked here"
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(tmp_path)  # never overwrite docs/img from a test
    assert main(argv) == 0
    printed = capsys.readouterr().out.replace(str(tmp_path), out)
    assert docblocks.differences(block, printed) == "", "run ./scripts/results to update"


def test_timed_columns_are_not_compared() -> None:
    block = docblocks.Block(Path("x.md"), 0, 5, "true", TABLE, True, False, ("ms / iteration",))
    slower = TABLE.replace("3.46           |", "12.5           |")
    assert docblocks.differences(block, slower) == ""
    assert "-| SGD | 60 | * |" in docblocks.differences(block, slower.replace("60 ", "70 "))


def test_blocks_are_found_run_and_rewritten(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n<!-- generated: measured -->\n```\n$ echo old\nold\n```\n"
        "<!-- generated: deterministic; slow; timed columns: a, b -->\n```\n$ printf 'x\\ny'\n"
        "x\n```\nmore text\n"
    )
    first, second = docblocks.find_blocks(doc)
    assert (first.command, first.output, first.deterministic) == ("echo old", "old", False)
    assert (second.slow, second.timed_columns, second.output) == (True, ("a", "b"), "x")
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
    ],
)
def test_malformed_markers_are_errors(tmp_path: Path, text: str, message: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(ValueError, match=message):
        docblocks.find_blocks(doc)
