"""Adopting streams beside existing producers, against a broker: our murmur2 agrees with what librdkafka itself
chooses; records placed by librdkafka's default partitioner are re-routed to their key's partition (idempotently,
even when the worker crashes between re-routing and committing) or dead-lettered with ``misrouted: dlq``; keys
in another format than the topic declares are dead-lettered as ``bad_key``; Avro keys are decoded."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streams.config import KafkaSettings, WorkerSettings
from streams.kafka.admin import Admin
from streams.kafka.embedded import free_port
from streams.kafka.partition import crc32_partition_of, partition_of
from streams.processors.counter import CounterProcessor
from streams.records import H_DLQ_MESSAGE, H_DLQ_REASON, H_EVENT_ID, InputRecord, header
from streams.runtime.worker import Worker, WorkerSpec
from streams.topology import TopicSpec, load
from support import WorkerProc, read_all, read_rows, wait_drained, wait_until
from test_routing import avro_key

pytestmark = pytest.mark.kafka
def topology(tmp: Path, name: str, kafka: KafkaSettings, partitions: int = 4, key_format: str = "string",
             extra: str = "") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"""
name: {name}
topics:
  {name}.in: {{partitions: {partitions}, key_format: {key_format}}}
  {name}.out: {{partitions: {partitions}}}
processors:
  counter: {{processor: counter, inputs: [{name}.in], outputs: [{name}.out]}}
{extra}
""")
    Admin(kafka).ensure(load(path).all_topics())
    return path


def misroutable(n: int, partitions: int = 4) -> list[str]:
    """Keys librdkafka's default partitioner (CRC32) puts on another partition than murmur2 does."""
    keys = (f"cust-{i}" for i in range(10_000))
    return [k for k in keys if crc32_partition_of(k.encode(), partitions) != partition_of(k.encode(), partitions)][:n]


def test_our_partitions_are_librdkafkas_for_murmur2_random_and_crc32_for_its_default(
        kafka: KafkaSettings, unique: str) -> None:
    topic = f"route-agree-{unique}"
    Admin(kafka).ensure([TopicSpec(topic, 7)])
    keys = [f"key-{i}-{'x' * (i % 9)}".encode() for i in range(400)] + [b"21", b"foobar", b"abc", b"\x00\xff"]
    for partitioner, tag in (("murmur2_random", b"m"), ("consistent_random", b"c")):
        p = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": partitioner, "linger.ms": 5})
        for k in keys:
            p.produce(topic, tag, k)
        assert p.flush(30) == 0
    rows = read_rows(kafka, topic, 7)
    placed = {(v, k): part for part, _o, k, v, _h in rows}
    assert len(placed) == 2 * len(keys)
    assert all(placed[(b"m", k)] == partition_of(k, 7) for k in keys), "murmur2 disagrees with librdkafka's"
    assert all(placed[(b"c", k)] == crc32_partition_of(k, 7) for k in keys)
    assert sum(placed[(b"m", k)] != placed[(b"c", k)] for k in keys) > 200  # the two really differ


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_records_placed_by_librdkafkas_default_partitioner_are_rerouted_once_even_across_a_crash(
        kafka: KafkaSettings, tmp_path: Path, unique: str, subprocess_env: dict[str, str]) -> None:
    name = f"reroute{unique}"
    topo = topology(tmp_path, name, kafka)
    keys = [*misroutable(10), "k-a", "k-b", "k-c"]
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})  # librdkafka's defaults: consistent_random
    expected: Counter[str] = Counter()
    for i in range(60):
        key = keys[i % len(keys)]
        p.produce(f"{name}.in", orjson.dumps({"amount": i + 1}), key.encode(), headers=[(H_EVENT_ID, f"e{i}".encode())])
        expected[key] += i + 1
    for i in range(3):  # no id header: the re-routed copy must carry its origin's position as its id
        p.produce(f"{name}.in", orjson.dumps({"amount": 1000}), keys[i].encode())
        expected[keys[i]] += 1000
    assert p.flush(30) == 0
    originals = read_rows(kafka, f"{name}.in", 4)
    misrouted = [r for r in originals if r[0] != partition_of(r[2], 4)]
    assert len(misrouted) >= 40  # most records of the first ten keys

    # The first run re-routes, has the copies acknowledged, and dies before committing its offsets.
    first = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w1.log", fault=("after_flush", 1))
    wait_until(lambda: first.proc.poll() is not None, 60, "the worker to crash at its first commit")
    port = free_port()
    second = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w2.log", ["--http-port", str(port)])
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 4, 90)
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: _metric(url, "streams_misrouted_total") == len(misrouted), 30, "the metric")
        duplicates = _metric(url, "streams_duplicates_total")
    finally:
        second.stop()
    log = first.log_text() + second.log_text()
    assert "consistent_random, CRC32" in log and "set partitioner=murmur2_random in the producer" in log
    assert log.count("puts keys on other partitions") == 2  # once per topic, in each run

    # Every misrouted record has copies on its key's partition with its id (given, or its origin position).
    rows = read_rows(kafka, f"{name}.in", 4)
    copies = [r for r in rows if r[1] >= max((o for part, o, *_ in originals if part == r[0]), default=-1) + 1]
    assert all(r[0] == partition_of(r[2], 4) for r in copies)
    # The crashed run's copies were acknowledged but its offsets not committed: the second run made them again,
    # and the owner dropped each second copy as a duplicate (same id).
    assert len(copies) > len(misrouted) and duplicates == len(copies) - len(misrouted)
    for part, offset, key, value, headers in misrouted:
        eid = header(headers, H_EVENT_ID) or f"{name}.in/{part}/{offset}".encode()
        mine = [r for r in copies if header(r[4], H_EVENT_ID) == eid]
        assert mine and all(r[2] == key and r[3] == value for r in mine), eid
    # ...and each applied once: the counter's last output per key has the exact count and total.
    last: dict[str, dict[str, int]] = {}
    for k, v, _h in read_all(kafka, f"{name}.out", 4):
        body = orjson.loads(v or b"{}")
        if body["count"] >= last.get(k.decode() if k else "", {}).get("count", 0):
            last[(k or b"").decode()] = body
    assert {k: b["total"] for k, b in last.items()} == dict(expected)
    counts = Counter(r[2].decode() for r in originals)
    assert {k: b["count"] for k, b in last.items()} == dict(counts)


def test_with_misrouted_dlq_a_misrouted_record_is_dead_lettered_with_the_fix(
        kafka: KafkaSettings, tmp_path: Path, unique: str, subprocess_env: dict[str, str]) -> None:
    name = f"misdlq{unique}"
    topo = topology(tmp_path, name, kafka, extra="misrouted: dlq")
    wrong, right = misroutable(1)[0], "k-right"
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "consistent_random"})
    p.produce(f"{name}.in", orjson.dumps({"amount": 1}), wrong.encode(), headers=[(H_EVENT_ID, b"w1")],
              partition=crc32_partition_of(wrong.encode(), 4))
    p.produce(f"{name}.in", orjson.dumps({"amount": 2}), right.encode(), headers=[(H_EVENT_ID, b"r1")],
              partition=partition_of(right.encode(), 4))
    assert p.flush(30) == 0
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w.log")
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 4, 60)
    finally:
        w.stop()
    dead = read_all(kafka, f"{name}.dlq", 1)
    assert [(k, header(h, H_DLQ_REASON)) for k, _v, h in dead] == [(wrong.encode(), b"misrouted")]
    message = (header(dead[0][2], H_DLQ_MESSAGE) or b"").decode()
    assert f"belongs to partition {partition_of(wrong.encode(), 4)}" in message and "murmur2_random" in message
    assert [orjson.loads(v or b"")["key"] for _k, v, _h in read_all(kafka, f"{name}.out", 4)] == [right]
    assert len(read_rows(kafka, f"{name}.in", 4)) == 2  # nothing re-routed


def test_avro_keys_are_decoded_and_keys_in_another_format_are_dead_lettered_as_bad_key(
        kafka: KafkaSettings, tmp_path: Path, unique: str, subprocess_env: dict[str, str]) -> None:
    name = f"avrokey{unique}"
    topo = topology(tmp_path, name, kafka, key_format="avro")
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i, raw in enumerate([avro_key("order-1"), avro_key("order-2", 9), avro_key("order-1")]):
        # placed by the producer's own hash of the framed bytes: the worker re-routes by the decoded key
        p.produce(f"{name}.in", orjson.dumps({"amount": 10 + i}), raw, headers=[(H_EVENT_ID, f"a{i}".encode())],
                  partition=partition_of(raw, 4))
    p.produce(f"{name}.in", orjson.dumps({"amount": 1}), b"order-3", partition=partition_of(b"order-3", 4))
    # the engine's own records on this topic (a reply, a timer) carry its id and key by the plain string (order-2's
    # framed key hashes to its home partition too, so this one follows it there; order-1's is re-routed)
    p.produce(f"{name}.in", orjson.dumps({"amount": 100}), b"order-2", headers=[(H_EVENT_ID, b"reply")],
              partition=partition_of(b"order-2", 4))
    p.produce(f"{name}.in", b"not json", avro_key("order-4"), headers=[(H_EVENT_ID, b"poison")],
              partition=partition_of(b"order-4", 4))
    assert p.flush(30) == 0
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w.log")
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 4, 60)
        wait_until(lambda: len(read_all(kafka, f"{name}.out", 4)) == 4, 30, "four outputs")
    finally:
        w.stop()
    outs = {(k, orjson.loads(v or b"")["count"]): orjson.loads(v or b"")["total"]
            for k, v, _h in read_all(kafka, f"{name}.out", 4)}
    assert outs == {(b"order-1", 1): 10, (b"order-1", 2): 22, (b"order-2", 1): 11, (b"order-2", 2): 111}
    dead = read_all(kafka, f"{name}.dlq", 1)
    reasons = {k: header(h, H_DLQ_REASON) for k, _v, h in dead}
    # the dead letter of a record with a decoded key carries the key as produced, so a replay decodes it again
    assert reasons == {b"order-3": b"bad_key", avro_key("order-4"): b"decode_error"}
    assert all(not header(h, "streams-raw-key") for _k, _v, h in dead)
    message = next((header(h, H_DLQ_MESSAGE) or b"").decode() for k, _v, h in dead if k == b"order-3")
    assert "looks like a plain string; the topology declares avro" in message


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "doctor", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_doctor_reports_misrouted_records_per_partition_and_names_producers_only_when_told(
        kafka: KafkaSettings, tmp_path: Path, unique: str, subprocess_env: dict[str, str]) -> None:
    name = f"doctor{unique}"
    topo = topology(tmp_path, name, kafka)
    bad = misroutable(3)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})  # consistent_random
    for k in bad:
        p.produce(f"{name}.in", b"{}", k.encode())
    p.produce(f"{name}.in", b"{}", bad[0].encode(), headers=[("client.id", b"legacy-shop")])
    good = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "murmur2_random"})
    for i in range(20):
        good.produce(f"{name}.in", b"{}", f"fine-{i}".encode())
    good.produce(f"{name}.in", b"{}", None)  # no key: nothing to check
    assert p.flush(30) == 0 and good.flush(30) == 0
    res = _doctor(subprocess_env, "--topology", str(topo))
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    wrong = Counter(crc32_partition_of(k.encode(), 4) for k in [*bad, bad[0]])
    for part, n in wrong.items():
        row = next(line.split() for line in out.splitlines() if line.startswith(f"{name}.in ")
                   and line.split()[1] == str(part))
        assert row[3] == str(n) and row[4] == "0", out
    assert "legacy-shop (1)" in out and "do not carry their producer's client id" in out
    assert "consistent_random, CRC32" in out and f"{len(bad) + 1} problem record(s) found" in out

    clean = topology(tmp_path, f"{name}c", kafka)
    good.produce(f"{name}c.in", b"{}", b"fine")
    assert good.flush(30) == 0
    res = _doctor(subprocess_env, "--topology", str(clean))
    assert res.returncode == 0 and "no misrouted records or bad keys found" in res.stdout, res.stdout + res.stderr
    res = _doctor(subprocess_env, "--topology", str(clean), "--sample", "0")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "--sample" in res.stderr


class EnvelopeCounter(CounterProcessor):
    """The counter over records that carry the contract's envelope, as the Avro processors' records do."""

    def envelope_id(self, record: InputRecord) -> str | None:
        env = orjson.loads(record.value or b"{}").get("envelope") or {}
        return env.get("id")


def test_without_an_id_header_the_envelope_id_deduplicates_a_resent_record(
        kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    name = f"envid{unique}"
    topo = load(topology(tmp_path, name, kafka))
    proc = topo.processor(None)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "murmur2_random"})
    for env_id, amount in (("env-1", 5), ("env-1", 5), ("env-2", 7)):  # env-1 re-sent by its producer
        p.produce(f"{name}.in", orjson.dumps({"amount": amount, "envelope": {"id": env_id}}), b"acct")
    p.produce(f"{name}.in", orjson.dumps({"amount": 100}), b"acct")  # neither header nor envelope: its position
    assert p.flush(30) == 0
    worker = Worker(WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic),
                    EnvelopeCounter({}, proc.outputs), kafka,
                    WorkerSettings(group=topo.default_group(proc), state_dir=tmp_path / "w", commit_interval_ms=50),
                    lambda line: None)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 4, 60)
    finally:
        worker.stop()
        t.join(30)
    assert worker.stats.duplicates == 1
    outs = [orjson.loads(v or b"") for _k, v, _h in read_all(kafka, f"{name}.out", 4)]
    part = partition_of(b"acct", 4)
    assert [(o["count"], o["total"], o["event_id"]) for o in outs] == [
        (1, 5, "env-1"), (2, 12, "env-2"), (3, 112, f"{name}.in/{part}/3")]
