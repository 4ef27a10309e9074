"""Shared fixtures: a broker for the session.

Which one: $KAFKA_BOOTSTRAP_SERVERS when set (its kind from $STREAMS_BROKER, default real Kafka); else
$STREAMS_TEST_BROKER: ``kafka`` (the default: a real Apache Kafka single node started for the session),
``kafka3`` (three nodes) or ``tansu`` (the embedded broker).
Also the package built once per session as a user gets it: a wheel installed into a fresh venv outside the
checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.kafka.apache import ApacheKafka
from streams.kafka.embedded import EmbeddedBroker
from support import run_ok

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    """Kafka settings for the whole session (see the module docstring for which broker)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaSettings.from_env(external)
        return
    kind = os.environ.get("STREAMS_TEST_BROKER", "kafka")
    if kind == "tansu":
        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_path=log) as broker:
            yield broker.settings(env={})
        return
    if kind not in ("kafka", "kafka3"):
        raise pytest.UsageError(f"STREAMS_TEST_BROKER must be kafka, kafka3 or tansu, got {kind!r}")
    with ApacheKafka(tmp_path_factory.mktemp("kafka"), nodes=3 if kind == "kafka3" else 1) as cluster:
        yield KafkaSettings.from_env(cluster.bootstrap, env={})


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (scripts/test installs it; so does scripts/install-chromium, run here when missing):
    the dashboard tests drive it with playwright. Without it they fail saying so, they never skip."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    res = subprocess.run([str(ROOT / "scripts" / "install-chromium")], capture_output=True, text=True,
                         timeout=900, check=False)
    path = res.stdout.strip().splitlines()[-1] if res.returncode == 0 and res.stdout.strip() else ""
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"headless Chromium is needed for the dashboard tests and scripts/install-chromium could not "
                    f"provide it (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return path


@pytest.fixture
def unique() -> str:
    """A short unique name part, so tests sharing one broker never share topics or groups."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def subprocess_env(kafka: KafkaSettings) -> dict[str, str]:
    """Environment for `streams` subprocesses: same broker, this checkout's package first on the path."""
    env = dict(os.environ)
    env.update(kafka.child_env())
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("STREAMS_FAULT_POINT", None)
    return env


@pytest.fixture(autouse=True)
def _no_orphan_workers() -> Iterator[None]:
    """Kill worker subprocesses a test left running (it failed before stopping them)."""
    yield
    from support import LIVE

    while LIVE:
        w = LIVE.pop()
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of the checkout: the sdist, then the wheel from it (once per session)."""
    out = tmp_path_factory.mktemp("dist")
    run_ok([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=ROOT)
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    (whl,) = dist.glob("streams-*.whl")
    return whl


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (outside the repository) with the wheel installed; returns its bin directory."""
    home = tmp_path_factory.mktemp("venv")
    run_ok([sys.executable, "-m", "venv", str(home / "v")], cwd=home)
    bindir = home / "v" / "bin"
    run_ok([str(bindir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=home)
    return bindir


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory outside the repository, and an environment that cannot reach the checkout."""
    assert ROOT not in tmp_path.parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STREAMS_PURE", "VIRTUAL_ENV")}
    return tmp_path, env
