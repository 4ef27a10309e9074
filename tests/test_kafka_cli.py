"""`streams kafka start|stop|status`: a real Apache Kafka cluster on this machine, from the CLI and in-process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.config import KafkaSettings
from streams.kafka.admin import Admin
from streams.kafka.apache import ApacheKafka, cache_dir
from streams.kafka.client import until_settled

ROOT = Path(__file__).resolve().parents[1]


def _streams(args: list[str], path: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "streams", "kafka", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _bin_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only the named tools (links to the real ones)."""
    d = tmp_path / f"bin-{'-'.join(tools) or 'empty'}"
    d.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        assert real, f"{tool} is not installed"
        (d / tool).symlink_to(real)
    return str(d)


def test_start_status_stop_and_a_second_start_from_the_cache_without_maven(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    res = _streams(["start", "--dir", str(d)])
    assert res.returncode == 0, res.stderr[-2000:]
    bootstrap = res.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:") and "," not in bootstrap
    try:
        topic = f"kcli-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        status = _streams(["status", "--dir", str(d)])
        assert status.returncode == 0 and f"node 1: {bootstrap} running" in status.stdout, status.stdout
        assert (d / "node-1" / "server.log").stat().st_size > 0  # Kafka logs to its file, not the terminal
        assert "INFO" not in res.stdout + res.stderr
    finally:
        stop = _streams(["stop", "--dir", str(d)])
    assert stop.returncode == 0, stop.stderr
    status = _streams(["status", "--dir", str(d)])
    assert status.returncode == 1 and "node 1:" in status.stdout and "stopped" in status.stdout

    # Again, with only java on PATH: the jars come from the cache, and the data from the first run is there.
    assert (cache_dir() / "libs.complete").exists()
    java_only = _bin_with(tmp_path, "java")
    assert shutil.which("mvn", path=java_only) is None
    res = _streams(["start", "--dir", str(d)], path=java_only)
    try:
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.strip() == bootstrap  # the same ports, recorded in the cluster's directory
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
        assert topic in md.topics and len(md.topics[topic].partitions) == 2
        again = _streams(["start", "--dir", str(d)], path=java_only)
        assert again.returncode == 2 and "already running" in again.stderr and len(again.stderr.splitlines()) == 1
    finally:
        assert _streams(["stop", "--dir", str(d)]).returncode == 0
    assert not any(ApacheKafka(d).running().values())


def test_missing_java_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = _streams(["start", "--dir", str(tmp_path / "c")], path=_bin_with(tmp_path))
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "install OpenJDK 17 (apt-get install openjdk-17-jre-headless)" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_empty_cache_without_maven_says_what_to_install(tmp_path: Path) -> None:
    env_path = _bin_with(tmp_path, "java")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": env_path, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "streams", "kafka", "start", "--dir", str(tmp_path / "c")],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "not cached in" in res.stderr and "mvn is not on PATH" in res.stderr
    assert "apt-get install maven" in res.stderr


def test_bad_arguments_and_an_empty_dir_are_one_line(tmp_path: Path) -> None:
    for args in (["start", "--nodes", "2"], ["start", "--port", "70000"], ["start", "--port", "x"]):
        res = _streams([*args, "--dir", str(tmp_path / "c")])
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, (args, res.stderr)
    for action in ("status", "stop"):
        res = _streams([action, "--dir", str(tmp_path / "nothing")])
        assert res.returncode == 1 and "no Kafka cluster in" in res.stdout + res.stderr


def test_three_nodes_replicate_a_topic_and_serve_it() -> None:
    topic = f"k3-{uuid.uuid4().hex[:8]}"
    with ApacheKafka(nodes=3) as cluster:
        bootstrap = cluster.bootstrap
        assert len(bootstrap.split(",")) == 3
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
        md = admin.list_topics(topic, timeout=30)
        assert len(md.brokers) == 3
        for part in md.topics[topic].partitions.values():
            assert sorted(part.replicas) == [1, 2, 3]
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        # a node may answer for a topic just created before its metadata reached it: the engine's settling retry
        cfg = until_settled(lambda: admin.describe_configs([res])[res].result(30), time.monotonic() + 30)
        assert cfg["min.insync.replicas"].value == "2"  # acks=all survives one node down, not two

        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
        for i in range(30):
            p.produce(topic, f"v{i}".encode(), f"k{i}".encode())
        assert p.flush(30) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got: set[bytes] = set()
        try:
            for _ in range(120):
                m = c.poll(0.5)
                if m is not None and m.error() is None:
                    got.add(m.value() or b"")
                if len(got) == 30:
                    break
        finally:
            c.close()
        assert got == {f"v{i}".encode() for i in range(30)}

        # One node down at a time, the active controller first (what `streams chaos --kafka3` does).
        leader = cluster.quorum_leader()
        assert leader in (1, 2, 3)
        cluster.signal_node(leader, signal.SIGKILL)
        assert not cluster.running()[leader]
        deadline = time.monotonic() + 90
        while cluster.quorum_leader() in (leader, None):  # the survivors elect one of themselves
            assert time.monotonic() < deadline, "no new quorum leader within 90 s"
            time.sleep(0.5)
        for i in range(30, 40):  # acks=all still succeeds with two in-sync replicas
            p.produce(topic, f"v{i}".encode(), f"k{i}".encode())
        assert p.flush(60) == 0
        cluster.restart_node(leader)
        kafka = KafkaSettings.from_env(bootstrap, env={})
        while Admin(kafka).unready([topic]) or not all(cluster.running().values()):
            assert time.monotonic() < deadline + 90, Admin(kafka).unready([topic])
            time.sleep(0.5)
        root = cluster.root
    assert not root.exists()  # a throwaway cluster leaves nothing behind


@pytest.mark.parametrize("nodes", [2, 0])
def test_only_one_or_three_nodes(nodes: int) -> None:
    from streams.errors import ConfigError

    with pytest.raises(ConfigError, match=f"--nodes must be 1 or 3, got {nodes}"):
        ApacheKafka(Path("unused"), nodes=nodes)
