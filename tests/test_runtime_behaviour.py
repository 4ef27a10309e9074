"""Worker behaviour against the real broker: dead letters, backpressure, an unreachable broker, the topics CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.config import KafkaSettings, WorkerSettings
from streams.kafka.admin import Admin
from streams.kafka.client import make_consumer, make_producer, resume
from streams.kafka.embedded import free_port
from streams.processors import resolve
from streams.records import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR_CLASS,
    H_DLQ_GROUP,
    H_DLQ_MESSAGE,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_REASON,
    H_DLQ_TOPIC,
    H_EVENT_ID,
    header,
)
from streams.runtime.worker import Worker, WorkerSpec
from streams.topology import TopicSpec, load
from support import (
    WorkerProc,
    committed,
    counter_topology,
    private_broker,
    produce_counts,
    read_all,
    wait_drained,
    wait_until,
)

pytestmark = pytest.mark.kafka


def start_worker(kafka: KafkaSettings, topo_path: Path, state_dir: Path, **overrides: object
                 ) -> tuple[Worker, threading.Thread, list[str]]:
    topo = load(topo_path)
    proc = topo.processor(None)
    logs: list[str] = []
    settings = WorkerSettings(group=topo.default_group(proc), state_dir=state_dir, commit_interval_ms=50,
                              **overrides)  # type: ignore[arg-type]
    worker = Worker(WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic),
                    resolve(proc.processor, proc.options, proc.outputs), kafka, settings, logs.append)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return worker, t, logs


@pytest.mark.tansu
def test_poison_records_go_to_the_dlq_with_origin_and_the_partition_moves_on(
        kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    name = f"dlq{unique}"
    topo = counter_topology(tmp_path, name, 1, options="options: {fail_on_amount: 13}", kafka=kafka)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    p.produce(f"{name}.in", orjson.dumps({"amount": 1}), b"a", headers=[(H_EVENT_ID, b"good-1")])
    p.produce(f"{name}.in", b"\x00\x01garbage", b"a", headers=[(H_EVENT_ID, b"bad-bytes")])
    p.produce(f"{name}.in", orjson.dumps({"amount": 2}), None, headers=[(H_EVENT_ID, b"no-key")])
    p.produce(f"{name}.in", orjson.dumps({"amount": 13}), b"a", headers=[(H_EVENT_ID, b"raises")])
    # a null header value (Kafka allows them) is no reason to reject a record
    p.produce(f"{name}.in", orjson.dumps({"amount": 5}), b"a", headers=[(H_EVENT_ID, b"good-2"), ("x-null", None)])
    assert p.flush(10) == 0
    worker, t, _logs = start_worker(kafka, topo, tmp_path / "w")
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 1, 60)
    finally:
        worker.stop()
        t.join(30)
    assert worker.stats.dead_letters == 3
    dead = {header(h, H_EVENT_ID): (k, v, h) for k, v, h in read_all(kafka, f"{name}.dlq", 1)}
    assert set(dead) == {b"bad-bytes", b"no-key", b"raises"}
    _k, value, h = dead[b"bad-bytes"]
    assert value == b"\x00\x01garbage"  # the original bytes, for replay
    assert header(h, H_DLQ_TOPIC) == f"{name}.in".encode()
    assert header(h, H_DLQ_PARTITION) == b"0"
    assert header(h, H_DLQ_OFFSET) == b"1"
    assert header(h, H_DLQ_REASON) == b"decode_error"
    assert header(h, H_DLQ_ERROR_CLASS) == b"DecodeError"
    assert header(h, H_DLQ_GROUP) == f"{name}-counter".encode()
    assert header(dead[b"no-key"][2], H_DLQ_OFFSET) == b"2"
    raised = dead[b"raises"][2]
    assert header(raised, H_DLQ_REASON) == b"handler_exception"
    assert header(raised, H_DLQ_ATTEMPTS) == b"3"  # retried in place before giving up
    assert b"configured to fail" in (header(raised, H_DLQ_MESSAGE) or b"")
    # The good records around the poison ones were applied: the partition moved on.
    outs = [orjson.loads(v or b"") for _k, v, _h in read_all(kafka, f"{name}.out", 1)]
    assert [(o["count"], o["total"]) for o in outs] == [(1, 1), (2, 6)]


def test_backpressure_pauses_instead_of_growing(kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    name = f"bp{unique}"
    topo = counter_topology(tmp_path, name, 2, kafka=kafka)
    expected = produce_counts(kafka, f"{name}.in", 4_000, 100)
    # A tiny in-flight bound and a slow-to-send producer make the queue hit the bound within a batch.
    worker, t, _logs = start_worker(kafka, topo, tmp_path / "w", max_in_flight=200, max_batch=1000)
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 2, 60)
    finally:
        worker.stop()
        t.join(30)
    assert worker.stats.backpressure_pauses > 0
    assert worker.stats.records_in == 4_000 and worker.stats.dead_letters == 0
    outs = read_all(kafka, f"{name}.out", 2)
    assert len(outs) == 4_000
    final = {}
    for _k, v, _h in outs:
        o = orjson.loads(v or b"")
        final[o["key"]] = max(final.get(o["key"], (0, 0)), (o["count"], o["total"]))
    assert final == expected


def test_worker_waits_for_an_unreachable_broker_then_works(tmp_path: Path, subprocess_env: dict[str, str],
                                                         unique: str) -> None:
    port = free_port()
    env = dict(subprocess_env, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    topo = counter_topology(tmp_path, f"down{unique}", 2)
    w = WorkerProc(topo, tmp_path / "w", env, tmp_path / "w.log")
    try:
        wait_until(lambda: "unavailable" in w.log_text(), 60, "a clear retry line while Kafka is down")
        assert w.proc.poll() is None, "the worker must not exit while the broker is down"
        with private_broker(tmp_path, port) as kafka:
            # a liveness bound, not a target: a loaded 2-core machine has taken over 60 s for the JVM and the join
            wait_until(lambda: "processing" in w.log_text(), 150, "the worker to start once Kafka is up")
            expected = produce_counts(kafka, f"down{unique}.in", 500, 20)
            wait_drained(kafka, f"down{unique}-counter", f"down{unique}.in", 2, 60)
            assert w.stop() == 0
            finals = {}
            for _k, v, _h in read_all(kafka, f"down{unique}.out", 2):
                o = orjson.loads(v or b"")
                finals[o["key"]] = max(finals.get(o["key"], (0, 0)), (o["count"], o["total"]))
            assert finals == expected
    finally:
        if w.proc.poll() is None:
            w.kill()


def _streams(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_topics_create_is_idempotent(tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    topo = counter_topology(tmp_path, f"tc{unique}", 3)
    first = _streams("topics", "create", "--topology", str(topo), env=subprocess_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 4  # in, out, changelog, dlq
    assert f"created  tc{unique}-counter-changelog" in first.stdout
    second = _streams("topics", "create", "--topology", str(topo), env=subprocess_env)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout and second.stdout.count("exists") == 4
    described = _streams("topics", "describe", "--topology", str(topo), env=subprocess_env)
    assert f"tc{unique}-counter-changelog\tpartitions=3 ok\tcleanup=compact" in described.stdout


def test_non_copartitioned_topology_is_refused_in_one_line(tmp_path: Path, subprocess_env: dict[str, str],
                                                           unique: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""
name: cp{unique}
topics:
  cp{unique}.a: {{partitions: 4}}
  cp{unique}.b: {{partitions: 3}}
processors:
  join: {{processor: counter, inputs: [cp{unique}.a, cp{unique}.b]}}
""")
    for cmd in (["topics", "create"], ["worker"]):
        res = _streams(*cmd, "--topology", str(bad), env=subprocess_env)
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "not co-partitioned" in lines[0] and f"cp{unique}.a=4" in lines[0] and f"cp{unique}.b=3" in lines[0]


def test_worker_refuses_a_changelog_created_with_other_partitions(
        kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    from streams.kafka.admin import Admin
    from streams.topology import TopicSpec

    name = f"cl{unique}"
    topo = counter_topology(tmp_path, name, 4)
    Admin(kafka).ensure([TopicSpec(f"{name}-counter-changelog", 2, 1, "compact")])  # made by hand, wrongly
    res = _streams("worker", "--topology", str(topo), "--state-dir", str(tmp_path / "w"), env=subprocess_env)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert f"{name}-counter-changelog exists with 2 partitions, topology says 4" in res.stderr


def test_bad_cli_arguments_exit_nonzero_in_one_line(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    missing = _streams("worker", "--topology", str(tmp_path / "nope.yaml"), env=subprocess_env)
    assert missing.returncode == 2 and "cannot read topology" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    flag = _streams("worker", "--max-batch", "many", "--topology", "x", env=subprocess_env)
    assert flag.returncode == 2 and "argument --max-batch:" in flag.stderr and "integer" in flag.stderr
    assert len(flag.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr + flag.stderr
    time.sleep(0)


def test_http_endpoints_need_a_token_beyond_loopback(kafka: KafkaSettings, tmp_path: Path,
                                                     subprocess_env: dict[str, str], unique: str) -> None:
    import urllib.error
    import urllib.request

    from streams.kafka.embedded import free_port

    topo = counter_topology(tmp_path, f"http{unique}", 1, kafka=kafka)
    refused = _streams("worker", "--topology", str(topo), "--http-host", "0.0.0.0", "--http-port", "0",
                       "--state-dir", str(tmp_path / "x"), env={**subprocess_env, "STREAMS_HTTP_TOKEN": ""})
    assert refused.returncode == 2 and "needs a bearer token (pass --http-token" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    port = free_port()
    env = {**subprocess_env, "STREAMS_HTTP_TOKEN": "s3cret-token"}
    w = WorkerProc(topo, tmp_path / "w", env, tmp_path / "w.log", ["--http-host", "0.0.0.0", "--http-port", str(port)])
    try:
        wait_until(lambda: "serving /metrics" in w.log_text(), 30, "the HTTP endpoint")
        url = f"http://127.0.0.1:{port}/healthz"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=5)
        assert denied.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret-token"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    finally:
        assert w.stop() == 0
    assert "s3cret-token" not in w.log_text()


def test_dead_letters_are_logged_as_structured_json_with_their_trace(
        kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    from streams.records import H_TRACEPARENT

    name = f"jl{unique}"
    topo = counter_topology(tmp_path, name, 1, kafka=kafka)
    trace = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    p.produce(f"{name}.in", b"not json", b"acct-9", headers=[(H_EVENT_ID, b"bad-1"), (H_TRACEPARENT, trace)])
    p.produce(f"{name}.in", orjson.dumps({"amount": 3}), b"acct-9", headers=[(H_EVENT_ID, b"ok-1"),
                                                                           (H_TRACEPARENT, trace)])
    assert p.flush(10) == 0
    w = WorkerProc(topo, tmp_path / "w", {**subprocess_env, "STREAMS_LOG_FORMAT": "json"}, tmp_path / "w.log")
    wait_drained(kafka, f"{name}-counter", f"{name}.in", 1, 60)
    assert w.stop() == 0
    lines = [orjson.loads(line) for line in w.log_text().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    dead = [line for line in lines if line["msg"].startswith("dead letter")]
    assert len(dead) == 1
    d = dead[0]
    assert (d["entity_key"], d["topic"], d["partition"], d["offset"], d["reason"]) == (
        "acct-9", f"{name}.in", 0, 0, "decode_error")
    assert d["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    # The output of the good record continues the same trace with a span of its own.
    (_k, _v, headers), = read_all(kafka, f"{name}.out", 1)
    out_trace = (header(headers, H_TRACEPARENT) or b"").decode()
    assert out_trace.split("-")[1] == "0af7651916cd43dd8448eb211c80319c" and out_trace != trace.decode()


def test_opentelemetry_spans_continue_the_record_trace(kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streams.records import H_TRACEPARENT

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    name = f"otel{unique}"
    topo = counter_topology(tmp_path, name, 1, kafka=kafka)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    p.produce(f"{name}.in", orjson.dumps({"amount": 1}), b"k1", headers=[
        (H_EVENT_ID, b"e1"), (H_TRACEPARENT, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
    assert p.flush(10) == 0
    worker, t, _logs = start_worker(kafka, topo, tmp_path / "w")
    try:
        wait_drained(kafka, f"{name}-counter", f"{name}.in", 1, 60)
    finally:
        worker.stop()
        t.join(30)
    spans = [s for s in exporter.get_finished_spans() if s.name == f"process {name}.in"]
    assert len(spans) == 1
    span = spans[0]
    assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes is not None and span.attributes["messaging.kafka.message.key"] == "k1"


def test_a_cli_worker_exports_spans_when_asked(kafka: KafkaSettings, tmp_path: Path,
                                               subprocess_env: dict[str, str], unique: str) -> None:
    name = f"otc{unique}"
    topo = counter_topology(tmp_path, name, 1, kafka=kafka)
    produce_counts(kafka, f"{name}.in", 3, 1)
    w = WorkerProc(topo, tmp_path / "w", {**subprocess_env, "OTEL_TRACES_EXPORTER": "console"}, tmp_path / "w.log")
    wait_drained(kafka, f"{name}-counter", f"{name}.in", 1, 60)
    assert w.stop() == 0  # a graceful stop flushes the batch span processor
    text = w.log_text()
    assert text.count(f'"name": "process {name}.in"') == 3 and '"messaging.kafka.offset": 2' in text


@pytest.mark.tansu
def test_offset_gaps_are_fetched_again_once_then_accepted(kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    """Transaction markers occupy offsets no consumer sees: a real gap. On Tansu the worker fetches once more
    from the expected offset (it can skip batches for a tailing reader), then accepts the gap; on real Kafka a
    gap is always real and is accepted at once, without a second fetch."""
    name = f"gap{unique}"
    topo = counter_topology(tmp_path, name, 1, kafka=kafka)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": f"tx-{unique}"})
    p.init_transactions(10)
    for i in range(5):
        p.begin_transaction()
        p.produce(f"{name}.in", orjson.dumps({"amount": i + 1}), b"k", headers=[(H_EVENT_ID, f"t{i}".encode())])
        p.commit_transaction(10)
    worker, t, logs = start_worker(kafka, topo, tmp_path / "w")
    try:
        # Records at 0, 2, 4, 6, 8; markers after each. The worker commits past its last record (9); the
        # trailing marker (log end 10) is not a record it consumed.
        wait_until(lambda: committed(kafka, f"{name}-counter", f"{name}.in", 1) == {0: 9}, 60, "commit of 9")
    finally:
        worker.stop()
        t.join(30)
    assert worker.stats.records_in == 5
    if kafka.tansu:
        assert worker.stats.gap_refetches >= 1 and any("gap confirmed" in line for line in logs)
    else:
        assert worker.stats.gap_refetches == 0 and not any("fetching again" in line for line in logs)
    outs = [orjson.loads(v or b"") for _k, v, _h in read_all(kafka, f"{name}.out", 1)]
    assert [(o["count"], o["total"]) for o in outs] == [(1, 1), (2, 3), (3, 6), (4, 10), (5, 15)]


def test_replay_follow_shows_progress_until_workers_catch_up(kafka: KafkaSettings, tmp_path: Path,
                                                            subprocess_env: dict[str, str], unique: str) -> None:
    from streams.ops.replay import live_members

    name = f"rf{unique}"
    topo = counter_topology(tmp_path, name, 2, kafka=kafka)
    expected = produce_counts(kafka, f"{name}.in", 2_000, 50)
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w.log")
    wait_drained(kafka, f"{name}-counter", f"{name}.in", 2, 60)
    assert w.stop() == 0
    wait_until(lambda: not live_members(kafka, f"{name}-counter"), 60, "the group to empty")
    follow = subprocess.Popen([sys.executable, "-m", "streams", "replay", "--topology", str(topo),
                               "--from-beginning", "--yes", "--follow"], env=subprocess_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: "reprocessing: started" in _peek(tmp_path, follow), 30, "the phase's first line")
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w2.log")
    out, rest = follow.communicate(timeout=90)
    err = getattr(follow, "_peeked", "") + rest
    assert follow.returncode == 0, err
    assert "total 2000 records" in out
    # Not a terminal: a line when the phase starts and one when it ends (a bar on a terminal: test_cli_progress).
    assert f"replay: group {name}-counter reprocessing: started (2,000 to do)" in err
    assert f"replay: group {name}-counter reprocessing: done, 2,000/2,000 (100%)" in err
    assert w.stop() == 0
    assert "reset marker (replay): store wiped" in w.log_text()
    finals: dict[str, tuple[int, int]] = {}
    for _k, v, _h in read_all(kafka, f"{name}.out", 2):
        o = orjson.loads(v or b"")
        finals[o["key"]] = max(finals.get(o["key"], (0, 0)), (o["count"], o["total"]))
    assert finals == expected  # rebuilt from scratch: the same totals, not doubled


def _peek(tmp_path: Path, proc: subprocess.Popen[str]) -> str:
    """Progress so far on a live process's stderr, without blocking (what was read is kept on the object)."""
    import os as _os
    import select

    assert proc.stderr is not None
    buf = getattr(proc, "_peeked", "")
    while select.select([proc.stderr], [], [], 0)[0]:
        chunk = _os.read(proc.stderr.fileno(), 65536).decode()
        if not chunk:
            break
        buf += chunk
    proc._peeked = buf  # type: ignore[attr-defined]
    return buf


def test_a_record_of_a_partition_no_longer_assigned_is_left_to_its_new_owner(
        kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    # Found by `streams chaos`: a consume() batch held records of a partition the group took away while the batch
    # was being handled; rewinding it raised (Local: Erroneous state) and the worker crashed.
    from confluent_kafka import Message

    name = f"gone{unique}"
    topo = load(counter_topology(tmp_path, name, 2, kafka=kafka))
    proc = topo.processor(None)
    logs: list[str] = []
    worker = Worker(WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic),
                    resolve(proc.processor, proc.options, proc.outputs), kafka,
                    WorkerSettings(group=topo.default_group(proc), state_dir=tmp_path / "w"), logs.append)
    try:
        worker._process(Message(topic=f"{name}.in", partition=1, offset=7, key=b"k", value=b"{}"))
    finally:
        worker.stop()
        worker.run()  # stopped before it starts: closes the consumer, producer and stores
    assert worker.stats.records_in == 0
    assert any(f"not rewinding {name}.in[1], no longer assigned" in line for line in logs), logs


@pytest.mark.tansu
def test_a_partition_resumed_after_its_restore_is_fetched_at_once(kafka: KafkaSettings, unique: str) -> None:
    """The worker pauses its partitions in the assignment callback and resumes each once restored. Resumed the
    plain way, librdkafka fetched it only on its broker thread's next idle tick, 0.9-1 s later: a second of
    every failover. ``resume`` must have records flowing well inside that tick."""
    topic = f"resume{unique}"
    Admin(kafka).ensure([TopicSpec(topic, 2)])
    producer = make_producer(kafka)
    for i in range(200):
        producer.produce(topic, b"v", str(i).encode(), partition=i % 2)
    assert producer.flush(10) == 0
    consumer = make_consumer(kafka, f"g-{topic}")
    parts = [TopicPartition(topic, p, 0) for p in range(2)]
    assigned: list[bool] = []

    def on_assign(c: Consumer, _given: list[TopicPartition]) -> None:
        c.assign(parts)
        c.pause(parts)
        assigned.append(True)

    try:
        consumer.subscribe([topic], on_assign=on_assign)
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            assert not consumer.consume(10, 0.05), "a paused partition delivered records"
        assert assigned, "no assignment within 30 s"
        consumer.consume(10, 0.1)  # the fetcher now idles on its tick, as after a restore
        started = time.monotonic()
        resume(consumer, [TopicPartition(topic, p) for p in range(2)])
        got = 0
        while not got and time.monotonic() - started < 5:
            got = len(consumer.consume(100, 0.01))
        waited = time.monotonic() - started
    finally:
        consumer.close()
    assert got > 0
    assert waited < 0.5, f"first records {waited:.2f}s after resume: the fetcher waited for its idle tick"


@pytest.mark.kafka
def test_a_worker_whose_client_logs_during_an_assignment_keeps_running(
        kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    """librdkafka's group debug log hands lines to the worker during every rebalance. The worker used to ask its
    consumer for metadata inside the assignment callback, which ends confluent-kafka's call state there: the
    next log line in the same poll aborted the process (SIGABRT, `CallState_get: Assertion 'cs != NULL'`)."""
    topo = counter_topology(tmp_path, f"cgrp{unique}", 2, kafka=kafka)
    w = WorkerProc(topo, tmp_path / "w", {**subprocess_env, "KAFKA_CONSUMER_DEBUG": "cgrp"}, tmp_path / "w.log")
    try:
        wait_until(lambda: "restored; processing" in w.log_text() or w.proc.poll() is not None, 60,
                   "the worker to take its partitions")
        p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        for i in range(20):
            p.produce(f"cgrp{unique}.in", f"v{i}".encode(), f"k{i}".encode())
        assert p.flush(30) == 0
        wait_drained(kafka, f"cgrp{unique}-counter", f"cgrp{unique}.in", 2, 60)
        assert w.proc.poll() is None, w.log_text()[-3000:]
        assert "CallState_get" not in w.log_text()
    finally:
        w.stop()
