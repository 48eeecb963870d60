"""The tree stays ruff-clean (lint + format), with the config in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff not installed")
@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff(args):
    paths = [str(ROOT / p) for p in ("src", "tests", "scripts", "benchmarks")]
    r = subprocess.run([RUFF, *args, *paths], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
