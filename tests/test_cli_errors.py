"""What a new user meets first: bad arguments, bad files and unreachable endpoints.

Each must end in one readable line on stderr and the right exit code (2: fix your input; 1: something did not
answer), never a traceback, and soon: a wrong address must not cost minutes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.cli import main
from streams.config import KAFKA_REPEATS, LIBRDKAFKA_LOG, KafkaSettings, RepeatFilter
from streams.contracts.catalogue import Catalogue
from streams.errors import ConfigError, TopologyError
from streams.kafka.client import make_consumer
from streams.kafka.embedded import free_port
from streams.processors.avro import default_schemas
from streams.topology import load, locate

ROOT = Path(__file__).resolve().parents[1]
COUNTER = str(locate("counter"))
DOWN = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


def streams(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "STREAMS_NS")}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "streams", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=60, check=False)


# -- topology variables ------------------------------------------------------------------------------------


def test_variables_in_comments_are_left_alone() -> None:
    topo = load(COUNTER, {})  # line 1's comment names ${STREAMS_NS}, which has no default there
    assert topo.name == "counter" and "counter.in" in topo.topics
    assert load(COUNTER, {"STREAMS_NS": "dev-"}).processors["counter"].inputs == ("dev-counter.in",)


def test_variables_expand_in_values_and_keys_but_not_in_any_comment(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(
        "# ${A} ${B:-x}\n"
        "name: ${NS}x   # trailing: ${UNSET}\n"
        'topics: {"${NS}in": {partitions: ${P:-2}}}  #${UNSET}\n'
        "processors:\n"
        "  # ${UNSET}\n"
        "  p: {processor: c, inputs: [${NS}in], options: {tag: 'a # ${NS}'}}\n"
    )
    topo = load(f, {"NS": "n-"})
    assert topo.name == "n-x" and topo.topics["n-in"].partitions == 2  # a number still reads as a number
    assert topo.processors["p"].options == {"tag": "a # n-"}  # a '#' inside a value is no comment


def test_an_unset_variable_names_itself_the_file_and_the_line(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("# ${MISSING} here is only a comment\nname: x\ndlq_topic: ${MISSING}.dlq\n")
    with pytest.raises(TopologyError) as exc:
        load(f, {})
    assert str(exc.value).startswith(f"{f}:3:12: ${{MISSING}} is not set")


# -- YAML syntax errors keep their position -----------------------------------------------------------------


def test_a_malformed_topology_names_file_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\ntopics:\n  a: {partitions: 1\nprocessors: {}\n")
    with pytest.raises(TopologyError) as exc:
        load(f, {})
    assert str(exc.value) == (f"{f}:4:11: not valid YAML: expected ',' or '}}', but got ':' "
                              "(while parsing a flow mapping that starts at line 3, column 6)")


def test_a_malformed_subjects_file_names_file_line_and_column(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(default_schemas(), schemas)
    subjects = schemas / "subjects.yaml"
    subjects.write_text("topics:\n  orders.events: [OrderPlaced\n  x: - y\n")
    with pytest.raises(ConfigError) as exc:
        Catalogue.load(schemas)
    assert str(exc.value).startswith(f"{subjects}:3:") and "not valid YAML" in str(exc.value)


# -- librdkafka's log ---------------------------------------------------------------------------------------


def test_repeat_filter_lets_one_through_per_window_and_counts_the_rest() -> None:
    gate = RepeatFilter(window_s=0.3)
    assert gate.admit("Connect to 127.0.0.1:1 failed (after 0ms)") == 0
    assert [gate.admit(f"Connect to 127.0.0.1:1 failed (after {i}ms)") for i in range(20)] == [None] * 20
    assert gate.admit("another message") == 0
    time.sleep(0.35)
    assert gate.admit("Connect to 127.0.0.1:1 failed (after 3ms)") == 20


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_consumer_against_a_down_broker_logs_a_bounded_number_of_lines() -> None:
    raw: list[str] = []

    class Tap(logging.Filter):  # sees every librdkafka line before the rate limit does
        def filter(self, record: logging.LogRecord) -> bool:
            raw.append(record.getMessage())
            return True

    tap, shown = Tap(), _Count()
    errors: list[str] = []
    LIBRDKAFKA_LOG.filters.insert(0, tap)
    LIBRDKAFKA_LOG.addHandler(shown)
    with KAFKA_REPEATS._lock:
        KAFKA_REPEATS._seen.clear()  # a line another test let through must not hide this one
    consumer = make_consumer(KafkaSettings(DOWN), "cli-errors-down", logger=errors.append)
    try:
        consumer.subscribe(["cli-errors-down"])
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()
        LIBRDKAFKA_LOG.removeFilter(tap)
        LIBRDKAFKA_LOG.removeHandler(shown)
    assert len(raw) >= 10  # librdkafka reported every reconnect...
    assert 1 <= len(shown.records) <= 3, [r.getMessage() for r in shown.records]  # ...we showed each kind once
    assert "Connection refused" in shown.records[0].getMessage()
    assert 1 <= len(errors) <= 3, errors  # the error callback goes through the same gate


def test_a_worker_waiting_for_a_down_broker_says_so_in_a_few_lines(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "STREAMS_NS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "--topology", COUNTER, "--bootstrap", DOWN,
         "--state-dir", str(tmp_path / "state")],
        env={**base, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)
        assert proc.poll() is None  # it waits for Kafka rather than giving up
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    lines = err.strip().splitlines()
    assert not [line for line in lines if line.startswith("%")], lines[:5]  # nothing bypasses our logger
    assert 1 <= len(lines) <= 8, lines  # its retries back off: 0.5, 1, 2, 4 s...
    assert "Kafka at 127.0.0.1:1 unavailable (cannot connect to Kafka (127.0.0.1:1: Connection refused))" in lines[0]


# -- the CLI: one line, the right exit code, soon ------------------------------------------------------------


def _bad_yaml(tmp: Path) -> str:
    (tmp / "bad.yaml").write_text("name: x\ntopics:\n  a: {partitions: 1\n")
    return str(tmp / "bad.yaml")


CASES = [
    # (argv, exit code, words in the line); {tmp} is a scratch directory, {down} a closed HTTP port
    (["lag", "--bootstrap", DOWN], 1, "cannot connect to Kafka (127.0.0.1:1: Connection refused)"),
    (["dlq", "list", "--topic", "orders.dlq", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["dlq", "replay", "--topic", "orders.dlq", "--yes", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["topics", "list", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["topics", "create", "--topology", COUNTER, "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["replay", "--topology", COUNTER, "--from-beginning", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["replay", "--topology", COUNTER, "--from-beginning", "--bootstrap", "127.0.0.1:x"], 2, "not a number"),
    (["replay", "--topology", COUNTER, "--from-offset", "-5", "--bootstrap", DOWN], 2,
     "argument --from-offset: must be >= 0, got '-5'"),
    (["dlq", "list", "--topology", "{tmp}/none.yaml", "--bootstrap", DOWN], 2, "cannot read topology"),
    (["worker", "--topology", COUNTER, "--http-port", "99999"], 2, "argument --http-port: must be within 0..65535"),
    (["replay", "--topology", COUNTER, "--from-timestamp", "yesterday", "--bootstrap", DOWN], 2,
     "argument --from-timestamp: expected epoch milliseconds or an ISO-8601 time, got 'yesterday'"),
    (["state", "rebuild", "--topology", COUNTER, "--state-dir", "{tmp}", "--bootstrap", DOWN], 1,
     "cannot connect to Kafka"),
    (["status", "abc", "--url", "notaurl"], 2, "a worker URL must be http(s)://host[:port], got 'notaurl'"),
    (["status", "abc", "--url", "http://127.0.0.1:http"], 2, "a worker URL must be http(s)://host[:port]"),
    (["status", "abc", "--url", "http://[::1"], 2, "a worker URL must be http(s)://host[:port]"),
    (["schemas", "list", "--registry", "http://u:secret@[::1"], 2, "got 'http://[::1'"),
    (["status", "abc", "--url", "{down}"], 1, "WorkerUnreachableError: worker unreachable at http://127.0.0.1:"),
    (["status", "abc", "--topology", COUNTER, "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["schemas", "list", "--registry", "{down}"], 1, "unreachable"),
    (["registry", "--port", "0", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["registry", "--host", "0.0.0.0", "--bootstrap", DOWN], 2, "refusing to bind 0.0.0.0: a non-loopback address "
     "needs a bearer token (pass --token or --user"),
    (["registry", "--user", "nopassword", "--bootstrap", DOWN], 2, "a user is NAME:PASSWORD[:read|write|admin]"),
    (["dashboard", "--bootstrap", DOWN, "--worker", "http://[::1"], 2, "a --worker URL (or dns+http://name:port)"),
    (["demo", "--counter", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["bench", "--quick", "--bootstrap", DOWN], 1, "cannot connect to Kafka"),
    (["worker", "--topology", "{bad}"], 2, "bad.yaml:4:1: not valid YAML"),  # the mapping never closed
]


@pytest.mark.parametrize(("argv", "code", "words"), CASES,
                         ids=[f"{' '.join(a for a in c[0][:2])}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_and_unreachable_endpoints_give_one_line(argv: list[str], code: int, words: str,
                                                           tmp_path: Path) -> None:
    subs = {"{tmp}": str(tmp_path), "{down}": f"http://127.0.0.1:{free_port()}", "{bad}": _bad_yaml(tmp_path)}
    argv = [a.replace("{tmp}", str(tmp_path)) if a.startswith("{tmp}/") else subs.get(a, a) for a in argv]
    started = time.monotonic()
    res = streams(*argv)
    took = time.monotonic() - started
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], res.stderr
    assert took < 8, f"took {took:.1f}s"


def test_exit_codes_are_decided_in_one_place() -> None:
    from streams.cli import exit_code
    from streams.errors import KafkaOperationError, KafkaUnavailableError, WorkerUnreachableError

    assert [exit_code(e) for e in (ConfigError("x"), KafkaOperationError("x"))] == [2, 2]
    assert [exit_code(e) for e in (KafkaUnavailableError("x"), WorkerUnreachableError("x"))] == [1, 1]
    assert main(["status", "abc", "--url", "notaurl"]) == 2
