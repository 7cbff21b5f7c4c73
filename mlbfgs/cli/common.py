"""Helpers the subcommands share: argument types, progress bars, tables, files and plots.

Arguments are checked before any work starts: ranges by the argparse types below (so a
bad value is reported with the subcommand's usage), the output folder and the optional
packages by each subcommand's ``check``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..extras import require

DEFAULT_OUT = "mlbfgs-results"


@contextmanager
def progress(total: int, desc: str) -> Iterator[Any]:
    """A tqdm bar on stderr, shown only when stdout is a terminal; yields ``update(n)``."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, disable=not sys.stdout.isatty(), leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into docs)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "diverged"
        if value != 0.0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def names(
    text: str | None, default: list[str], what: str, known: list[str] | None = None
) -> list[str]:
    """The comma-separated ``text`` as a list (``default`` when None); every name must be in
    ``known`` (default: ``default``)."""
    if text is None:
        return default
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in (known or default)]
    if unknown or not chosen:
        raise ValueError(f"unknown {what}(s) {unknown}; choose from {known or default}")
    return chosen


def finite_or_text(values: Sequence[float]) -> list[float | str]:
    """Numbers for JSON, which has no NaN or infinity: those become "nan", "inf", "-inf"."""
    return [v if math.isfinite(v) else str(v) for v in values]


def plain(doc: str | None) -> str:
    """A docstring as help text: reST literals and roles (``x``, :func:`x`) become plain."""
    return re.sub(r"`+", "", re.sub(r":[a-z]+:`([^`]*)`", r"\1", doc or ""))


def out_dir(path: str) -> Path:
    """The output folder: created if needed, and proved writable (checks call it first)."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ValueError(f"--out {path}: cannot write there ({error.strerror or error})") from None
    return directory


def require_all(modules: Sequence[str]) -> None:
    """Import every optional module a subcommand needs, before it prints anything."""
    for module in modules:
        require(module, "this command")


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(ax: Any, x: Sequence[float], y: Sequence[float], label: str) -> None:
    """One run's curve. A run whose values turn non-finite (it diverged) is drawn up to
    there and marked with an x at the top of the axes where it diverged."""
    end = next((i for i, v in enumerate(y) if not math.isfinite(v)), len(y))
    if end == len(y):
        ax.plot(x, y, label=label)
        return
    (line,) = ax.plot(x[:end], y[:end], label=f"{label} (x: diverged)")
    ax.plot(
        [x[end]],
        [0.95],
        "x",
        color=line.get_color(),
        markersize=10,
        markeredgewidth=2.5,
        transform=ax.get_xaxis_transform(),
        clip_on=False,
    )


def save(fig: Any, path: Path, legend_from: Any = None, columns: int = 4) -> Path:
    """Write the figure; ``legend_from``'s legend goes below the axes, in large type."""
    if legend_from is None:
        fig.tight_layout()
    else:
        handles, labels = legend_from.get_legend_handles_labels()
        rows = -(-len(labels) // columns)
        fig.legend(handles, labels, loc="lower center", ncol=columns, frameon=False, fontsize=10)
        height = fig.get_figheight()
        fig.tight_layout(rect=(0.0, (0.1 + 0.25 * rows) / height, 1.0, 1.0))
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def _number(
    cast: Callable[[str], Any], ok: Callable[[Any], bool], rule: str
) -> Callable[[str], Any]:
    """An argparse type: ``cast(text)`` must be finite and satisfy ``ok``; argparse names
    the option in the error ("argument --lr: must be a number > 0, got 'nan'")."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
fraction = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def add_common(parser: Any, quick_help: str, out: bool = True) -> None:
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if out:
        parser.add_argument(
            "--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
        )
