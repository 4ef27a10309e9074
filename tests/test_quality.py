"""The quality gates run in the suite: ruff, mypy --strict and the import-linter layering contracts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    res = _run(sys.executable, "-m", "ruff", "check", "streams", "tests")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_is_clean() -> None:
    res = _run(sys.executable, "-m", "mypy", "streams")
    assert res.returncode == 0, res.stdout + res.stderr


def test_layering_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is part of the dev extra"
    res = _run(exe)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_modules_stay_under_800_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "streams").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 800}
    assert not big, f"split these along a real seam: {big}"
