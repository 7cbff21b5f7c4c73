"""Every command written in the README and in docs/ runs as written after the README's
set-up, so the docs cannot drift from the code.

A command is a line of a ```bash block, the ``$`` line of a generated output block, or
an inline span that starts with ``./scripts/``, ``.venv/bin/`` or ``pip install``. Each
is checked without running anything long: the scripts exist, ``mlbfgs`` arguments parse,
a Python script has the flags it is given, a pip extra exists. A bare ``python ...``,
``mpiexec ...`` or ``mlbfgs demo --flag`` would run the wrong interpreter (or none) in
a fresh clone, so it is an error.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlbfgs.cli import parse

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"^(\./scripts/\w|\.venv/bin/\w|pip install |([A-Z_]+=\S* )+\.venv/bin/)")
TOOLS = "python3?|mpiexec|mpirun|torchrun|pytest|mlbfgs"
BARE = re.compile(rf"^([A-Z_]+=\S* )*({TOOLS})(\s+\S+)*?\s+(-|\S*/)")
FENCE = re.compile(r"^```(\w*)$")
SPAN = re.compile(r"`([^`\n]+)`")


def commands(path: Path) -> tuple[list[str], list[str]]:
    """(runnable commands, bare tool invocations) written in one Markdown file."""
    runnable, bare = [], []
    language = None
    # A shell line ending in a backslash continues on the next one: join them first.
    for line in path.read_text().replace("\\\n", " ").splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence[1]
            continue
        if language is None:
            spans = [s.strip() for s in SPAN.findall(line)]
        elif line.startswith("$ "):
            spans = [line[2:]]
        elif language == "bash" and line.strip() and not line.lstrip().startswith("#"):
            spans = [line.split("  #")[0].strip()]
        else:
            continue
        runnable += [s for s in spans if RUNNABLE.match(s)]
        bare += [s for s in spans if BARE.match(s)]
    return runnable, bare


ALL = [(path.relative_to(ROOT), c) for path in DOCS for c in commands(path)[0]]


def test_every_doc_has_commands_and_none_is_bare() -> None:
    found = {str(path) for path, _ in ALL}
    assert {"README.md", "docs/results.md", "docs/distributed.md"} <= found
    bare = [f"{p.relative_to(ROOT)}: {c}" for p in DOCS for c in commands(p)[1]]
    assert bare == [], "write .venv/bin/<tool> or ./scripts/<name> so it runs in a fresh clone"


def flags_exist(script: Path, args: list[str]) -> None:
    assert script.is_file(), script
    source = script.read_text()
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert f'"{flag}"' in source, f"{script.name} has no {flag}"


def check_python(args: list[str]) -> None:
    if args[0] == "-m":
        assert importlib.util.find_spec(args[1]) is not None, args[1]
    else:
        flags_exist(ROOT / args[0], args[1:])


def check_script(name: str, args: list[str]) -> None:
    path = ROOT / "scripts" / name
    assert path.is_file() and path.stat().st_mode & 0o111, f"{path} is not executable"
    if name in ("mpirun", "torchrun"):
        assert args[0] == "-n" and int(args[1]) >= 1
        check_python(args[2:])
    elif name == "demo":
        assert parse(["demo", *args]).command == "demo"
    elif name == "results":
        sys.path.insert(0, str(ROOT / "scripts"))
        import docblocks

        docblocks.build_parser().parse_args(args)


def check_pip(args: list[str]) -> None:
    """``pip install 'mlbfgs[a,b]'`` names extras that pyproject.toml defines."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for arg in args:
        for extras in re.findall(r"^mlbfgs\[([\w,]+)\]$", arg):
            for extra in extras.split(","):
                assert re.search(rf"^{extra} = \[", pyproject, re.M), f"no extra {extra!r}"


@pytest.mark.parametrize(("doc", "command"), ALL, ids=[f"{d}: {c}" for d, c in ALL])
def test_documented_command_exists_and_parses(
    doc: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    words = shlex.split(command)
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # environment assignments
        words.pop(0)
    program, args = words[0], words[1:]
    if program.startswith("./scripts/"):
        check_script(program.removeprefix("./scripts/"), args)
    elif program == "pip":
        check_pip(args)
    elif program == ".venv/bin/mlbfgs":
        try:
            parse(args)
        except SystemExit as exit_:  # --help and --version exit 0 after printing
            assert exit_.code == 0, capsys.readouterr().err
    elif program == ".venv/bin/python":
        check_python(args)
    elif program == ".venv/bin/torchrun":  # its own options, then the script and its flags
        check_python(args[next(i for i, a in enumerate(args) if a.endswith(".py")) :])
    elif program == ".venv/bin/pytest":
        assert all((ROOT / a.split("::")[0]).exists() for a in args if not a.startswith("-"))
    else:
        assert (ROOT / program).exists() or not (ROOT / ".venv").exists(), program


def test_mpirun_uses_the_venv_python_on_every_rank() -> None:
    if not (ROOT / ".venv" / "bin" / "mpiexec").exists():
        pytest.skip("no .venv with mpich here (./scripts/setup makes one)")
    code = (
        "import sys; from mpi4py import MPI; found = MPI.COMM_WORLD.gather(sys.executable)\n"
        "if found: print(*found)"  # rank 0 alone prints, so the lines cannot interleave
    )
    result = subprocess.run(
        [str(ROOT / "scripts" / "mpirun"), "-n", "2", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    python = str(ROOT / ".venv" / "bin" / "python")
    assert result.stdout.split() == [python, python]


def test_design_references_point_into_the_repository() -> None:
    """The design document is docs/design.md; nothing may cite a DESIGN.md it lacks."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    citing = {f for f in listed if "DESIGN.md" in (ROOT / f).read_text(errors="ignore")}
    citing.discard("tests/docs/test_docs_commands.py")
    assert not citing, f"{sorted(citing)}: cite docs/design.md instead"
    assert (ROOT / "docs" / "design.md").is_file()
