"""Every subcommand of the ``mlbfgs`` command line in its quick mode: table and PNG checked."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlbfgs.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")


def table_lines(text: str, header: str) -> list[list[str]]:
    """The rows of the first Markdown table whose header line contains ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| ") and header in line)
    found = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        found.append([c.strip() for c in line.strip("|").split("|")])
    return found


def rows(text: str, header: str) -> dict[str, list[str]]:
    """The same table as {first cell: other cells}."""
    return {cells[0]: cells[1:] for cells in table_lines(text, header)}


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(np.std(image[..., :3])) > 0.01  # something was drawn
    assert path.stat().st_size < 200_000


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = rows(out, "| optimizer")
    assert list(table) == ["mL-BFGS", "SGD", "Adam", "L-BFGS"]
    for label, cells in table.items():
        iterations, seconds, final, accuracy, ms = cells
        # The target is reached within the 12 iterations, or it is not and has no time.
        assert (iterations, seconds) == ("not reached", "-") or (
            1 <= int(iterations) <= 12 and float(seconds) > 0.0
        ), label
        # From the same start, every optimizer ends below the loss of uniform predictions
        # over the 10 classes (ln 10), the starting point of a freshly initialised net.
        assert 0.0 < float(final) < math.log(10), label
        assert 0.0 <= float(accuracy) <= 1.0 and float(ms) > 0.0
    outcomes = [(cells[2], cells[3]) for cells in table.values()]  # final loss, accuracy
    assert len(set(outcomes)) == len(outcomes)  # four different optimizers, four outcomes
    # The quick run reaches preconditioning (T = 2): mL-BFGS differs from plain SGD (its
    # steps have SGD's length, so the loss may agree to the 4 digits printed).
    assert table["mL-BFGS"][2:4] != table["SGD"][2:4]
    assert_png(tmp_path / "demo.png")


def test_demo_reads_a_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from test_data import write_mnist

    write_mnist(tmp_path, n_train=40, n_test=10)
    code = main(["demo", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 0
    out = capsys.readouterr().out
    assert "mnist: 40 training and 10 test images, 1x28x28" in out
    assert (tmp_path / "o" / "demo.png").is_file()


def test_demo_bad_input_names_the_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    for bad in (["--data", "nope"], ["--iterations", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--quick", *bad, "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert f"argument {bad[0]}: " in capsys.readouterr().err
    assert not (tmp_path / "demo.png").exists()


def test_reproduce_fig1_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "fig1", "--quick", "--out", str(tmp_path)]) == 0
    table = rows(capsys.readouterr().out, "| method")
    assert list(table) == ["SGD", "L-BFGS (vanilla)", "L-BFGS + momentum", "exact 2nd order"]
    start_loss = 0.5 * (2.0**2 + 2.0**2)
    for cells in table.values():
        assert 0.0 <= float(cells[0]) < start_loss
        assert re.fullmatch(r"\d+/3", cells[-1])
    # Second-order steps beat SGD (lr 0.1) after 5 steps on this quadratic.
    assert float(table["exact 2nd order"][0]) < float(table["SGD"][0])
    assert_png(tmp_path / "fig1.png")


def test_reproduce_ablation_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "ablation", "--quick", "--out", str(tmp_path)]) == 0
    table = rows(capsys.readouterr().out, "| variant")
    assert list(table) == [
        "full (momentum + damping)",
        "momentum only",
        "damping only",
        "neither (vanilla)",
    ]
    for cells in table.values():
        assert int(cells[3]) + int(cells[4]) >= 5  # pairs formed every T = 2 steps
    finals = {cells[0] for cells in table.values()}
    assert len(finals) > 1  # the variants really differ
    assert_png(tmp_path / "ablation.png")


def test_bench_quick(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    assert main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"BLAS threads .*, load average", out)
    pre = table_lines(out, "two-loop ms")
    assert len(pre) == 4  # n in (1e3, 2e4) x M in (2, 5)
    for cells in pre:
        speedup, copy_gbs, fraction, diff = (float(c) for c in cells[4:8])
        assert speedup > 0 and copy_gbs > 0 and fraction > 0
        assert diff < 1e-4  # compact form and two-loop agree
    it = table_lines(out, "ratio to SGD")
    assert [cells[1] for cells in it] == ["SGD", "mL-BFGS"]
    assert float(it[0][3]) == 1.0 and all(float(cells[3]) > 0 for cells in it)
    assert re.search(r"target at batch 16 .*: \d+\.\d+ \(<= 1.15: (met|MISSED)\)", out)
    mem = table_lines(out, "peak MB")
    assert len(mem) == 2
    for cells in mem:
        assert float(cells[4]) >= 1.0  # the history alone is 2 M n values


def test_bench_rejects_unknown_parts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--parts", "4"])
    assert "argument --parts: must list some of 1, 2, 3" in capsys.readouterr().err


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlbfgs 0.") and "numpy" in out
    assert "MPI:" in out and "GPUs:" in out


def _fig1_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mlbfgs", "reproduce", "fig1", "--quick", "--out", str(out)]


def test_module_entry_point_is_quiet_without_a_tty(tmp_path: Path) -> None:
    result = subprocess.run(
        _fig1_command(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=True,
    )
    assert "| method" in result.stdout
    assert result.stderr == ""  # no progress bar when stdout is not a terminal


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    child = subprocess.Popen(_fig1_command(tmp_path), stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closes when the child exits
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert child.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "fig1:" in text and "it/s" in text  # tqdm drew its bar
    assert "| method" in text


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_a_diverged_run_ends_in_an_x_where_it_diverged() -> None:
    from mlbfgs.cli.common import plot_run, pyplot

    fig, ax = pyplot().subplots()
    plot_run(ax, [0, 10, 20, 30], [2.0, 1.0, 5.0, float("nan")], "L-BFGS")
    plot_run(ax, [0, 10, 20, 30], [2.0, 1.0, 0.5, 0.2], "SGD")
    curve, marker, finished = ax.get_lines()
    assert curve.get_label() == "L-BFGS (x: diverged)" and list(curve.get_xdata()) == [0, 10, 20]
    assert marker.get_marker() == "x" and list(marker.get_xdata()) == [30]
    assert marker.get_color() == curve.get_color()
    assert finished.get_label() == "SGD" and len(finished.get_xdata()) == 4
    pyplot().close(fig)
