"""`streams schemas ...` and `streams registry` as users run them: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient
from streams.kafka.embedded import free_port
from streams.processors.avro import default_schemas
from streams.registry import RegistryServer

pytestmark = pytest.mark.kafka

SCHEMAS = default_schemas()
CATALOGUE = Catalogue.load(SCHEMAS)
TOPIC_SUBJECTS = list(CATALOGUE.subjects("topic"))  # per topic, in file order: -value, then its records


@pytest.fixture
def registry(kafka: KafkaSettings, unique: str) -> Iterator[RegistryServer]:
    with RegistryServer(kafka, topic=f"_schemas-{unique}") as server:
        yield server


def streams(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def without_field(tmp_path: Path, record_file: str, field: str) -> Path:
    d = tmp_path / f"without-{field}"
    shutil.copytree(SCHEMAS, d)
    path = d / record_file
    schema = json.loads(path.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
    path.write_text(json.dumps(schema))
    return d


def test_register_check_list_show(registry: RegistryServer, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    url = ["--registry", registry.url]
    first = streams("schemas", "register", "--dir", str(SCHEMAS), "--compatibility", "full", *url, env=subprocess_env)
    assert first.returncode == 0, first.stderr
    assert [line.split()[:2] for line in first.stdout.splitlines()] == [["ok", s] for s in TOPIC_SUBJECTS]
    client = RegistryClient(registry.url)
    assert client.subjects() == sorted(TOPIC_SUBJECTS)
    assert {client.compatibility(s) for s in TOPIC_SUBJECTS} == {"FULL"}

    again = streams("schemas", "register", "--dir", str(SCHEMAS), *url, env=subprocess_env)
    assert again.returncode == 0 and again.stdout == first.stdout  # idempotent: same ids
    dry = streams("schemas", "register", "--dry-run", "--strategy", "record", *url, env=subprocess_env)
    assert dry.returncode == 0
    assert dry.stdout.count("new ") == len(CATALOGUE.messages) and "streams.orders.MakePayment" in dry.stdout
    assert client.subjects() == sorted(TOPIC_SUBJECTS)  # a dry run changes nothing

    ok = streams("schemas", "check", "--dir", str(SCHEMAS), *url, env=subprocess_env)
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.count("ok ") == len(TOPIC_SUBJECTS) and "(FULL)" in ok.stdout

    # removing a field without a default breaks readers still on the old schema: the CI gate names it
    broken = without_field(tmp_path, "orders/events/OrderPlaced.avsc", "customer_id")
    check = streams("schemas", "check", "--dir", str(broken), *url, env=subprocess_env)
    assert check.returncode == 1, check.stdout + check.stderr
    # both subjects that hold OrderPlaced: the topic's union and the record's own (TopicRecordNameStrategy)
    assert "BREAKING   orders.events-value (FULL)" in check.stdout
    assert "BREAKING   orders.events-streams.orders.OrderPlaced (FULL)" in check.stdout
    assert "field streams.orders.OrderPlaced.customer_id has no default" in check.stdout
    assert check.stdout.count("ok ") == len(TOPIC_SUBJECTS) - 2
    rejected = streams("schemas", "register", "--dir", str(broken), *url, env=subprocess_env)
    assert rejected.returncode == 1 and "BREAKING   orders.events-value" in rejected.stdout
    assert "customer_id" in rejected.stdout
    dry_broken = streams("schemas", "register", "--dry-run", "--dir", str(broken), *url, env=subprocess_env)
    assert dry_broken.returncode == 1 and "BREAKING   orders.events-value" in dry_broken.stdout
    assert dry_broken.stdout.count("unchanged") == len(TOPIC_SUBJECTS) - 2

    env = {**subprocess_env, "SCHEMA_REGISTRY_URL": registry.url}
    listed = streams("schemas", "list", env=env)
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [r[0] for r in rows] == sorted(TOPIC_SUBJECTS) and {r[1] for r in rows} == {"version 1"}
    shown = streams("schemas", "show", "payments.commands-value", env=env)
    assert shown.returncode == 0
    head, _, body = shown.stdout.partition("\n")
    assert head.startswith("# subject payments.commands-value  version 1  id ")
    assert [branch["name"] for branch in json.loads(body)] == ["streams.orders.MakePayment",
                                                               "streams.orders.RefundPayment"]


def test_usage_and_connection_problems_are_one_line(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    cases = [  # 1: the registry did not answer; 2: the command is wrong
        (["schemas", "list", "--registry", down], 1, "unreachable"),
        (["schemas", "check", "--registry", down], 1, "unreachable"),
        (["schemas", "check", "--dir", str(tmp_path / "missing"), "--registry", down], 2, "does not exist"),
        (["schemas", "list", "--registry", "ftp://example"], 2, "must be http(s)"),
        (["schemas", "register", "--strategy", "sideways"], 2, "invalid choice"),
        (["registry", "--port", "70000", "--bootstrap", "127.0.0.1:1"], 2, "argument --port: must be within 0..65535"),
    ]
    for args, code, words in cases:
        result = streams(*args, env=subprocess_env)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr


def test_show_missing_subject_fails_readably(registry: RegistryServer, subprocess_env: dict[str, str]) -> None:
    result = streams("schemas", "show", "nope", "--registry", registry.url, env=subprocess_env)
    assert result.returncode == 2
    assert "Subject 'nope' not found" in result.stderr and "40401" in result.stderr


def wait_listening(port: int, proc: subprocess.Popen[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("registry did not listen")


def test_registry_command_serves_and_restarts_from_the_log(subprocess_env: dict[str, str], unique: str) -> None:
    topic = f"_schemas-{unique}"
    schema = json.dumps({"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]})
    ids = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "streams", "registry", "--port", str(port), "--topic", topic],
                                env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_listening(port, proc)
            client = RegistryClient(f"http://127.0.0.1:{port}")
            ids.append((client.register("t-value", schema), client.register("u-value", schema + " "),
                        client.versions("t-value")))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert f"schema registry listening on http://127.0.0.1:{port}" in err
    assert ids[0] == ids[1] == (1, 1, [1])
