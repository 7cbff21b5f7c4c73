"""Generated output blocks in the docs: find them, re-run their commands, rewrite or compare.

A generated block is a fenced block whose first line is ``$ COMMAND`` (run verbatim with
bash in the repository root), right after a marker line:

    <!-- generated: deterministic -->
    <!-- generated: deterministic; slow -->
    <!-- generated: deterministic; timed columns: seconds to target, ms / iteration -->
    <!-- generated: deterministic; within 25%: final train loss; not compared: std -->
    <!-- generated: measured -->

``deterministic``: the output depends only on the code, up to the rounding that differs
between machines (OpenBLAS picks its kernels by processor, so the last bits of a product
do too). A table column is compared according to the marker's options:

- by default exactly, as printed: right for text, counts and values that rounding cannot
  change at the digits printed;
- ``timed columns: a, b`` and ``not compared: a, b``: never (timings; values so sensitive
  to rounding that no tolerance holds);
- ``within P%: a, b``: numbers within P% of the block's (values downstream of a
  trajectory that amplifies rounding but stays stable);
- ``diverged above X: a``: a row whose column ``a`` exceeds X in the block diverged, and
  the code must print a value above X there too (its value is not compared further);
- ``after divergence: b, c``: columns not compared in a diverged row (what they count
  happened after the divergence); its other columns are compared as above.

tests/docs/test_results_blocks.py compares the cheap deterministic blocks with what the code
prints, and shows that one-ulp perturbations pass and a wrong constant fails; those marked
``slow`` are compared only by ``./scripts/results --check``. ``measured``: timings or facts
of this machine, rewritten by ``./scripts/results`` and never compared.

Usage (through ``./scripts/results``, which uses the project's .venv):
    ./scripts/results                 re-run every block and rewrite it in place
    ./scripts/results --only fig1     only blocks whose command contains "fig1" (repeatable)
    ./scripts/results --check         re-run the deterministic blocks, rewrite no block,
                                      exit 1 if one differs (the commands still write
                                      their plots, which come out the same)
    ./scripts/results --slow          list the compared blocks that ./scripts/test skips
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
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
class Rules:
    """How the numbers of a deterministic block's table columns are compared."""

    ignored: tuple[str, ...] = ()
    """Columns never compared: timings, and values no tolerance holds for."""
    tolerance: tuple[tuple[str, float], ...] = ()
    """``(column, relative tolerance)``: numbers within it of the block's match."""
    diverged: tuple[str, float] | None = None
    """``(column, threshold)``: a row above it diverged, and must diverge in the code too."""
    after_divergence: tuple[str, ...] = ()
    """Columns not compared in a diverged row: what they count happened after it."""


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
    rules: Rules = Rules()

    def describe(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.fence + 1}: $ {self.command}"


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(","))


def parse_marker(spec: str) -> tuple[bool, bool, Rules]:
    """(deterministic, slow, rules) from the text inside a marker."""
    kind, *options = (part.strip() for part in spec.split(";"))
    if kind not in ("deterministic", "measured"):
        raise ValueError(f"generated block kind must be deterministic or measured, got {kind!r}")
    slow, ignored, after, tolerance = False, list[str](), list[str](), list[tuple[str, float]]()
    diverged: tuple[str, float] | None = None
    for option in options:
        name, _, value = option.partition(":")
        if option == "slow":
            slow = True
        elif name in ("timed columns", "not compared") and value:
            ignored += _columns(value)
        elif name == "after divergence" and value:
            after += _columns(value)
        elif (match := re.fullmatch(r"within ([0-9.]+)%", name)) and value:
            tolerance += [(c, float(match[1]) / 100) for c in _columns(value)]
        elif (match := re.fullmatch(r"diverged above ([0-9.eE+-]+)", name)) and value:
            diverged = (value.strip(), float(match[1]))
        else:
            raise ValueError(f"unknown option in a generated-block marker: {option!r}")
    rules = Rules(tuple(ignored), tuple(tolerance), diverged, tuple(after))
    return kind == "deterministic", slow, rules


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
        deterministic, slow, rules = parse_marker(match["spec"])
        blocks.append(
            Block(
                path=path,
                fence=i + 1,
                end=end,
                command=lines[i + 2][2:],
                output="\n".join(lines[i + 3 : end]),
                deterministic=deterministic,
                slow=slow,
                rules=rules,
            )
        )
    return blocks


Row = list[str] | str
"""A normalised line: a table row as its cells, or any other line as text."""


def _rows(text: str) -> tuple[list[Row], list[tuple[str, ...]]]:
    """The lines of ``text`` with table cells stripped, and each row's table header (the
    first row of its table; ``()`` outside tables). Trailing whitespace is dropped (tables
    pad each column to its widest cell, so a value of another width would otherwise shift
    the whole row)."""
    rows: list[Row] = []
    headers: list[tuple[str, ...]] = []
    header: tuple[str, ...] = ()
    for line in text.rstrip().splitlines():
        if not line.startswith("|"):
            rows.append(line.rstrip())
            headers.append(())
            header = ()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= {"-"}:  # the header separator
            cells = ["---"]
        elif not header:
            header = tuple(cells)
        rows.append(cells)
        headers.append(header)
    return rows, headers


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _cell_matches(old: str, new: str, column: str, rules: Rules) -> bool:
    if old == new or column in rules.ignored:
        return True
    tolerance = dict(rules.tolerance).get(column)
    a, b = _number(old), _number(new)
    if tolerance is None or a is None or b is None:
        return False
    return abs(b - a) <= tolerance * abs(a)


def _diverged(row: list[str], header: tuple[str, ...], rules: Rules) -> bool | None:
    """Whether ``row`` diverged by the rules (``None``: no such rule for this table)."""
    if rules.diverged is None or rules.diverged[0] not in header:
        return None
    column, threshold = rules.diverged
    value = _number(row[header.index(column)]) if len(row) == len(header) else None
    return value is not None and value > threshold


def _reconcile(old: Row, new: Row, header: tuple[str, ...], rules: Rules) -> Row:
    """``new`` with every cell that matches ``old`` under ``rules`` replaced by old's
    text, so that a diff shows only the differences that count (``*`` for ignored
    columns, which a diff of two blocks should not show either)."""
    if isinstance(old, str) or isinstance(new, str) or len(old) != len(new) or old == header:
        return new
    if len(header) != len(new):
        return new
    skip = set[str]()
    if rules.diverged and _diverged(old, header, rules) and _diverged(new, header, rules):
        skip = {rules.diverged[0], *rules.after_divergence}
    return [
        o if column in skip or _cell_matches(o, n, column, rules) else n
        for o, n, column in zip(old, new, header, strict=True)
    ]


def _text(row: Row, header: tuple[str, ...], rules: Rules) -> str:
    if isinstance(row, str):
        return row
    if row == ["---"]:
        return "|---|"
    cells = [
        "*" if column in rules.ignored and row != list(header) else cell
        for cell, column in zip(row, header or ("",) * len(row), strict=False)
    ]
    return "| " + " | ".join(cells) + " |"


def normalise(text: str, rules: Rules = Rules()) -> str:
    """Output as compared: table cells stripped, ignored columns replaced by ``*``."""
    rows, headers = _rows(text)
    return "\n".join(_text(r, h, rules) for r, h in zip(rows, headers, strict=True))


def differences(block: Block, output: str) -> str:
    """A unified diff of the block's text against a new output under the block's rules
    ('' if they match)."""
    old, headers = _rows(block.output)
    new, new_headers = _rows(output)
    if len(old) == len(new):
        new = [
            _reconcile(o, n, h, block.rules) if h == nh else n
            for o, n, h, nh in zip(old, new, headers, new_headers, strict=True)
        ]
    old_text = [_text(r, h, block.rules) for r, h in zip(old, headers, strict=True)]
    new_text = [_text(r, h, block.rules) for r, h in zip(new, new_headers, strict=True)]
    diff = difflib.unified_diff(old_text, new_text, "docs", "code", lineterm="", n=1)
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


def skipped_checks() -> str:
    """What ./scripts/test does not compare (the slow deterministic blocks), and how to."""
    slow = [b for path in doc_files() for b in find_blocks(path) if b.deterministic and b.slow]
    lines = [
        f"docs checks skipped by ./scripts/test: {len(slow)} slow blocks (minutes each; "
        "the demo runs and the suites). Compare them with:"
    ]
    lines += [f"  ./scripts/results --check --only {shlex.quote(b.command)}" for b in slow]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./scripts/results",
        description="Re-run the commands whose output the docs quote; rewrite or compare.",
    )
    parser.add_argument("--check", action="store_true", help="compare, rewrite nothing")
    parser.add_argument(
        "--slow",
        action="store_true",
        help="list the commands of the compared blocks that ./scripts/test skips, and exit",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="only blocks whose command contains TEXT (may be given several times)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.slow:
        print(skipped_checks())
        return 0
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
