"""Every ``tests/...py`` or ``mlbfgs/...py`` path that a document, docstring or comment
cites exists, so a file that moves or goes takes its citations with it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"(?<![\w/.])((?:tests|mlbfgs)/[\w/]*\w\.py)\b")


def cited_paths() -> dict[str, list[str]]:
    """Cited path -> the files that cite it, over every file git tracks or would track."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    found: dict[str, list[str]] = {}
    for name in listed:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".toml", ".sh", "") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for cited in CITED.findall(text):
            found.setdefault(cited, []).append(name)
    return found


def test_every_cited_path_exists() -> None:
    cited = cited_paths()
    assert "mlbfgs/core/config.py" in cited  # the scan finds citations at all
    missing = {path: where for path, where in cited.items() if not (ROOT / path).is_file()}
    assert not missing, f"cited but absent (path: citing files): {missing}"


def test_the_pattern_finds_paths_and_nothing_else() -> None:
    text = "see tests/core/test_config.py, mlbfgs/engine/state.py; not ``x/mlbfgs/a.py``"
    assert CITED.findall(text) == ["tests/core/test_config.py", "mlbfgs/engine/state.py"]
