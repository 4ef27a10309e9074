"""The README's first command: the demos run end to end on the embedded default and say they succeeded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "streams", "demo", *args], env=env, capture_output=True,
                          text=True, timeout=240, check=False)


def test_saga_demo_runs_on_the_embedded_default() -> None:
    res = _demo("--orders", "300", "--rate", "150", "--payment-timeout-ms", "3000", "--no-answer-rate", "0.02")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    out = res.stdout
    assert "started embedded broker" in res.stderr and "embedded schema registry" in res.stderr
    assert "demo: dashboard at http://127.0.0.1:" in res.stderr  # a page wired to its workers, one click away
    completed = int(out.split("completed")[1].split()[0])
    cancelled = int(out.split("cancelled")[1].split()[0])
    assert completed + cancelled == 300 and completed > 200 and cancelled > 0
    assert "p99" in out and "dead letters    0" in out and "UNFINISHED" not in out


def test_counter_demo_checks_exactly_once() -> None:
    res = _demo("--counter", "--records", "3000", "--keys", "100", "--poison", "3")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "demo: dashboard at http://127.0.0.1:" in res.stderr
    assert "exactly once   yes" in res.stdout and "dead letters   3 (expected 3" in res.stdout
