"""Long operations show a rich progress bar on a terminal (a real pseudo-terminal here) and a plain line per phase
anywhere else (a pipe, a log file), on stderr either way: stdout keeps only the command's result."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.progress import Lines
from support import WorkerProc, counter_topology, produce_counts, wait_drained

ROOT = Path(__file__).resolve().parents[1]
BAR = "━"  # rich's bar segment


def _env(kafka: KafkaSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS")}
    return {**env, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TERM": "xterm-256color", "COLUMNS": "120"}


def on_pty(argv: list[str], env: dict[str, str], timeout_s: float = 120,
           when: tuple[str, Callable[[], None]] | None = None) -> tuple[int, str]:
    """Run ``streams argv`` with stdout and stderr on a pseudo-terminal; its exit code and everything it wrote.
    ``when``: (text, action): the action runs once, as soon as the output shows the text."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "streams", *argv], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout_s)
            if not ready:
                raise AssertionError(f"no output for {timeout_s}s: {out.decode(errors='replace')[-2000:]}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if when is not None and when[0] in out.decode(errors="replace"):
                when[1]()
                when = None
    finally:
        os.close(master)
        rc = proc.wait(30)
    return rc, out.decode(errors="replace")


@pytest.fixture(scope="module")
def restored(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A counter topology whose changelog holds some thousands of entities, its worker stopped."""
    tmp = tmp_path_factory.mktemp("progress")
    name = f"prog{uuid.uuid4().hex[:8]}"
    topo = counter_topology(tmp, name, partitions=2, kafka=kafka)
    produce_counts(kafka, f"{name}.in", 6000, keys=3000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    worker = WorkerProc(topo, tmp / "state", env, tmp / "worker.log")
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 2)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    return topo, name


@pytest.mark.kafka
def test_state_rebuild_shows_a_progress_bar_on_a_terminal(kafka: KafkaSettings, restored: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    topo, name = restored
    rc, out = on_pty(["state", "rebuild", "--topology", str(topo), "--state-dir", str(tmp_path)], _env(kafka))
    assert rc == 0, out
    assert f"restoring {name}-counter-changelog (2 partitions)" in out, out
    assert BAR in out and "\x1b[" in out, out  # drawn with terminal control sequences
    assert "partition 0: rebuilt, state hash" in out and "partition 1: rebuilt" in out
    counts = re.findall(r"(\d+)/(\d+)", out.replace(",", ""))
    assert counts and counts[-1][0] == counts[-1][1] and int(counts[-1][1]) >= 3000, out  # all read, counted


@pytest.mark.kafka
def test_state_rebuild_logs_plain_phase_lines_when_not_on_a_terminal(kafka: KafkaSettings,
                                                                     restored: tuple[Path, str],
                                                                     tmp_path: Path) -> None:
    topo, name = restored
    res = subprocess.run([sys.executable, "-m", "streams", "state", "rebuild", "--topology", str(topo),
                          "--state-dir", str(tmp_path), "--json"], capture_output=True, text=True,
                         env=_env(kafka), timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    phase = f"restoring {name}-counter-changelog (2 partitions)"
    lines = res.stderr.splitlines()
    assert f"{phase}: started" in lines, res.stderr
    done = [line for line in lines if line.startswith(f"{phase}: done, ")]
    assert len(done) == 1 and "(100%)" in done[0], res.stderr
    assert BAR not in res.stderr and "\x1b[" not in res.stderr + res.stdout
    hashes = __import__("json").loads(res.stdout)  # stdout: the result alone
    assert sorted(hashes) == ["0", "1"] and all(len(h) == 64 for h in hashes.values())


@pytest.mark.kafka
def test_topic_creation_shows_a_bar_on_a_terminal_and_lines_elsewhere(kafka: KafkaSettings, tmp_path: Path) -> None:
    env = _env(kafka)
    topo = counter_topology(tmp_path, f"progtopics{uuid.uuid4().hex[:8]}")
    rc, out = on_pty(["topics", "create", "--topology", str(topo)], env)
    assert rc == 0 and "creating 4 topics" in out and BAR in out and "4/4" in out, out  # in, out, changelog, dlq
    topo2 = counter_topology(tmp_path, f"progtopics{uuid.uuid4().hex[:8]}")
    res = subprocess.run([sys.executable, "-m", "streams", "topics", "create", "--topology", str(topo2)],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "creating 4 topics (0 exist): started (4 to do)" in res.stderr.splitlines(), res.stderr
    assert any(line.startswith("creating 4 topics (0 exist): done, 4/4 (100%)") for line in res.stderr.splitlines())
    assert BAR not in res.stderr and res.stdout.count("created  ") == 4


@pytest.mark.kafka
def test_replay_follow_shows_a_progress_bar_until_the_workers_caught_up(kafka: KafkaSettings,
                                                                      restored: tuple[Path, str],
                                                                      tmp_path: Path) -> None:
    topo, name = restored
    env = _env(kafka)
    workers: list[WorkerProc] = []

    def start_worker() -> None:  # once the offsets are rewound: a live member would make replay refuse
        workers.append(WorkerProc(topo, tmp_path / "state", {**env, "TERM": "dumb"}, tmp_path / "worker.log"))

    try:
        rc, out = on_pty(["replay", "--topology", str(topo), "--from-beginning", "--yes", "--follow"], env,
                         when=("start the workers to reprocess", start_worker))
    finally:
        for w in workers:
            w.stop()
    assert rc == 0, out
    assert workers, out
    assert f"replay: group {name}-counter reprocessing" in out and BAR in out, out
    counts = re.findall(r"(\d+)/(\d+)", out.replace(",", ""))
    assert counts[-1] == ("6000", "6000"), out  # every input record reprocessed


def test_lines_says_each_phase_begins_and_ends_and_at_most_one_update_per_interval() -> None:
    said: list[str] = []
    now = [0.0]
    lines = Lines(said.append, every_s=10.0, clock=lambda: now[0])
    lines.phase("restoring x", 100)
    for t in range(1, 25):
        now[0] = float(t)
        lines.advance(t * 4)
    lines.phase("waiting")
    now[0] = 30.0
    lines.end()
    lines.end()  # nothing more: the phase already ended
    assert said == ["restoring x: started (100 to do)", "restoring x: 40/100 (40%), ETA 15s",
                    "restoring x: 80/100 (80%), ETA 5s",
                    "restoring x: done, 96/100 (96%) in 24.0s", "waiting: started", "waiting: done, 0 done in 6.0s"]


COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|38;[25];[0-9;]+|9[0-7])m")  # an SGR sequence setting a colour


def test_help_is_coloured_only_on_a_terminal_and_never_with_no_color() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "120"})
    rc, out = on_pty(["topics", "--help"], env)
    assert rc == 0 and COLOUR.search(out), out
    rc, out = on_pty(["topics", "--help"], {**env, "NO_COLOR": "1"})
    assert rc == 0 and "create" in out and not COLOUR.search(out), out
    res = subprocess.run([sys.executable, "-m", "streams", "topics", "--help"], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert res.returncode == 0 and "create" in res.stdout and "\x1b[" not in res.stdout


def test_the_saga_demo_draws_its_start_up_and_its_orders_as_bars_on_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "NO_COLOR", "TERM", "COLUMNS")}
    env.update({"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "120"})
    rc, out = on_pty(["demo", "--orders", "100", "--rate", "100", "--payment-timeout-ms", "2000"], env, timeout_s=180)
    assert rc == 0, out[-3000:]
    assert "creating " in out and "demo: starting 4 workers (processing)" in out and "4/4" in out, out[-3000:]
    assert "demo: 100 orders placed at 100/s, finished" in out and "100/100" in out and BAR in out, out[-3000:]
    assert "streams demo: order saga" in out and "\r  placed" not in out  # the summary; no hand-made \r line
