"""Generated output blocks in the docs: find them, re-run their commands, rewrite or compare.

A generated block is a fenced block whose first line is ``$ COMMAND`` (run verbatim with
bash in the repository root), right after a marker line:

    <!-- generated: deterministic -->
    <!-- generated: deterministic; slow -->
    <!-- generated: deterministic; timed columns: seconds to target, ms / iteration -->
    <!-- generated: measured -->

``deterministic``: the output depends only on the code, except for the named table
columns, which hold timings and are never compared. tests/test_results_blocks.py compares
these blocks with what the code prints; those marked ``slow`` are compared only by
``./scripts/results --check``. ``measured``: timings or facts of this machine, rewritten
by ``./scripts/results`` and never compared.

Usage (through ``./scripts/results``, which uses the project's .venv):
    ./scripts/results                 re-run every block and rewrite it in place
    ./scripts/results --only fig1     only blocks whose command contains "fig1" (repeatable)
    ./scripts/results --check         re-run the deterministic blocks, rewrite no block,
                                      exit 1 if one differs (the commands still write
                                      their plots, which come out the same)
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: (?P<spec>.*?) -->$")
FENCE = "```"


@dataclass(frozen=True)
class Block:
    """One generated block: where it is, its command and its current output."""

    path: Path
    fence: int
    """Line index of the opening fence (the marker is the line before it)."""
    end: int
    """Line index of the closing fence."""
    command: str
    output: str
    deterministic: bool
    slow: bool
    timed_columns: tuple[str, ...]

    def describe(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.fence + 1}: $ {self.command}"


def parse_marker(spec: str) -> tuple[bool, bool, tuple[str, ...]]:
    """(deterministic, slow, timed columns) from the text inside a marker."""
    kind, *options = (part.strip() for part in spec.split(";"))
    timed: tuple[str, ...]
    if kind not in ("deterministic", "measured"):
        raise ValueError(f"generated block kind must be deterministic or measured, got {kind!r}")
    slow, timed = False, ()
    for option in options:
        if option == "slow":
            slow = True
        elif option.startswith("timed columns:"):
            timed = tuple(c.strip() for c in option.split(":", 1)[1].split(","))
        else:
            raise ValueError(f"unknown option in a generated-block marker: {option!r}")
    return kind == "deterministic", slow, timed


def find_blocks(path: Path) -> list[Block]:
    """Every generated block of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        match = MARKER.match(line)
        if match is None:
            continue
        where = f"{path}:{i + 1}"
        if i + 2 >= len(lines) or lines[i + 1] != FENCE or not lines[i + 2].startswith("$ "):
            raise ValueError(f"{where}: a marker must precede a ``` fence whose first line is $ ")
        end = lines.index(FENCE, i + 2)
        deterministic, slow, timed = parse_marker(match["spec"])
        blocks.append(
            Block(
                path=path,
                fence=i + 1,
                end=end,
                command=lines[i + 2][2:],
                output="\n".join(lines[i + 3 : end]),
                deterministic=deterministic,
                slow=slow,
                timed_columns=timed,
            )
        )
    return blocks


def normalise(text: str, timed_columns: Sequence[str] = ()) -> str:
    """Output as compared: table cells stripped, timed columns replaced by ``*``, and
    trailing whitespace dropped (tables pad each column to its widest cell, so a timing
    of another width would otherwise shift the whole row)."""
    result, masked = [], set[int]()
    for line in text.rstrip().splitlines():
        if not line.startswith("|"):
            result.append(line.rstrip())
            masked = set()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= {"-"}:  # the header separator
            result.append("|---|")
            continue
        if not masked and any(c in timed_columns for c in cells):
            masked = {j for j, c in enumerate(cells) if c in timed_columns}  # a header
        elif masked:
            cells = ["*" if j in masked else c for j, c in enumerate(cells)]
        result.append("| " + " | ".join(cells) + " |")
    return "\n".join(result)


def differences(block: Block, output: str) -> str:
    """A unified diff of the block's normalised text against a new output ('' if same)."""
    old = normalise(block.output, block.timed_columns).splitlines()
    new = normalise(output, block.timed_columns).splitlines()
    diff = difflib.unified_diff(old, new, "docs", "code", lineterm="", n=1)
    return "\n".join(diff)


def run(command: str) -> str:
    """The command's standard output, run with bash in the repository root."""
    result = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"$ {command}\nexited {result.returncode}:\n{result.stderr}")
    return result.stdout.rstrip()


def rewrite(path: Path, outputs: dict[int, str]) -> None:
    """Replace the output of each block (keyed by its fence line) and save the file."""
    lines = path.read_text().splitlines()
    for block in sorted(find_blocks(path), key=lambda b: -b.fence):
        if block.fence in outputs:
            new = [f"$ {block.command}", *outputs[block.fence].splitlines()]
            lines[block.fence + 1 : block.end] = new
    path.write_text("\n".join(lines) + "\n")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./scripts/results",
        description="Re-run the commands whose output the docs quote; rewrite or compare.",
    )
    parser.add_argument("--check", action="store_true", help="compare, rewrite nothing")
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="only blocks whose command contains TEXT (may be given several times)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failed = False
    for path in doc_files():
        outputs = {}
        for block in find_blocks(path):
            if args.only and not any(text in block.command for text in args.only):
                continue
            if args.check and not block.deterministic:
                continue
            start = time.perf_counter()
            output = run(block.command)
            outputs[block.fence] = output
            diff = differences(block, output) if block.deterministic else ""
            state = "differs" if diff else ("same" if block.deterministic else "measured")
            seconds = time.perf_counter() - start
            print(f"{block.describe()}  [{state}, {seconds:.0f} s]", file=sys.stderr)
            if diff:
                print(diff, file=sys.stderr)
                failed = True
        if outputs and not args.check:
            rewrite(path, outputs)
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
