"""The README quickstart and the NumPy example run and learn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quickstart_learns() -> None:
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["loss"] < 0.3  # chance level is log(3) = 1.1
    assert namespace["opt"].stats()[0]["pairs_stored"] == 10


def test_numpy_mlp_example_prints_a_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "numpy_mlp.py"), "--epochs", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[1].startswith("optimizer")
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[2:]}
    assert set(rows) == {"SGD lr 0.1", "SGD lr 0.3", "mL-BFGS lr 0.1", "mL-BFGS lr 0.3"}
    for name in ("mL-BFGS lr 0.1", "mL-BFGS lr 0.3"):
        assert float(rows[name][-3]) < 1.0  # final training loss, from log(10) = 2.3
    source = (ROOT / "examples" / "numpy_mlp.py").read_text()
    assert "import torch" not in source
