"""exactly_once on real Apache Kafka: outputs, changelog and input offsets commit in one transaction, so a
read_committed reader sees every output once, through crashes and a frozen zombie's late writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.config import KafkaSettings, WorkerSettings
from streams.errors import ConfigError, KafkaUnavailableError, ProducerFencedError, TransactionAbortedError
from streams.kafka.admin import Admin
from streams.kafka.transactions import Transactions, check_guarantee
from streams.records import H_EVENT_ID, InputRecord, OutputRecord
from streams.runtime.processor import UNCHANGED, Step, TimerChange
from streams.runtime.restore import Restorer
from streams.runtime.worker import Worker, WorkerSpec
from streams.state import entity, timers
from streams.state.store import PartitionStore
from streams.topology import TopicSpec, load, parse
from support import WorkerProc, counter_topology, produce_counts, wait_drained, wait_until

PARTS = 4
EOS = ["--processing-guarantee", "exactly_once"]


@pytest.fixture
def eos_kafka(kafka: KafkaSettings) -> KafkaSettings:
    """The broker, unless it is the embedded Tansu, which cannot do transactions (so nothing here can run)."""
    if kafka.broker == "tansu":  # only when a run chooses the embedded broker (STREAMS_TEST_BROKER=tansu)
        pytest.skip("exactly_once needs Apache Kafka transactions; the embedded Tansu broker cannot do them "
                    "correctly: the suite's default broker is a real Kafka node")
    return kafka


def read_outputs(kafka: KafkaSettings, topic: str, isolation: str = "read_committed") -> list[dict[str, object]]:
    """Every record of ``topic`` up to its end as ``isolation`` sees it (read_committed: the last stable
    offset, past which an open transaction's records wait)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"eos-read-{uuid.uuid4().hex}",
                  "enable.partition.eof": True, "enable.auto.commit": False, "isolation.level": isolation})
    out: list[dict[str, object]] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTS)])
        done: set[int] = set()
        deadline = time.monotonic() + 60
        while len(done) < PARTS and time.monotonic() < deadline:
            for m in c.consume(10000, 0.5):
                err = m.error()
                if err is None:
                    out.append(orjson.loads(m.value()))
                    done.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition())
        assert len(done) == PARTS, f"no end seen for some partitions of {topic}"
        return out
    finally:
        c.close()


def stable_committed(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, without waiting for an open transaction's offsets to settle (a
    read_committed client would wait for them: KIP-447's require_stable)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group,
                  "isolation.level": "read_uncommitted"})
    try:
        return {tp.partition: tp.offset
                for tp in c.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)}
    finally:
        c.close()


def assert_exactly_once(outputs: list[dict[str, object]], expected: dict[str, tuple[int, int]]) -> None:
    """One output per input event, and each key's outputs count 1..n once each with the right final total:
    the live state behind them was never behind, ahead or doubled."""
    dupes = [e for e, n in Counter(o["event_id"] for o in outputs).items() if n > 1]
    assert not dupes, f"{len(dupes)} event(s) output more than once, e.g. {dupes[:3]}"
    assert len(outputs) == sum(c for c, _t in expected.values())
    by_key: dict[str, list[tuple[int, int]]] = {}
    for o in outputs:
        by_key.setdefault(str(o["key"]), []).append((int(str(o["count"])), int(str(o["total"]))))
    for key, (count, total) in expected.items():
        seen = sorted(by_key.get(key, []))
        assert [c for c, _t in seen] == list(range(1, count + 1)), f"{key}: counts {[c for c, _t in seen]}"
        assert seen[-1][1] == total, f"{key}: final total {seen[-1][1]} != {total}"


def test_exactly_once_outputs_each_record_once_and_commits_offsets(
        eos_kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    name = f"eos{unique}"
    topo = counter_topology(tmp_path, name, PARTS, kafka=eos_kafka)
    expected = produce_counts(eos_kafka, f"{name}.in", 2_000, 100)
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w.log", EOS)
    wait_drained(eos_kafka, f"{name}-counter", f"{name}.in", PARTS, 90)  # the offsets committed
    assert w.stop() == 0
    outputs = read_outputs(eos_kafka, f"{name}.out")
    assert_exactly_once(outputs, expected)
    # Written in transactions: each committed transaction left a marker, so the log is longer than its records.
    c = Consumer({"bootstrap.servers": eos_kafka.bootstrap_servers, "group.id": f"eos-wm-{unique}"})
    try:
        ends = sum(c.get_watermark_offsets(TopicPartition(f"{name}.out", p), timeout=10)[1] for p in range(PARTS))
    finally:
        c.close()
    assert ends > len(outputs)


@pytest.mark.parametrize("point", ["after_changelog_produced", "after_offsets_sent", "after_txn_commit"])
def test_a_crash_inside_the_transaction_leaves_nothing_visible_and_the_restart_redoes_it(
        eos_kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str, point: str) -> None:
    name = f"eoscrash{unique}"
    topo = counter_topology(tmp_path, name, PARTS, kafka=eos_kafka)
    expected = produce_counts(eos_kafka, f"{name}.in", 2_000, 100)
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w.log", [*EOS, "--max-batch", "200"],
                   fault=(point, 3))
    assert w.proc.wait(90) == -signal.SIGKILL
    assert f"fault point {point} reached" in w.log_text()
    # Right after the crash a read_committed reader sees the outputs of exactly the committed offsets: none of
    # the batch whose transaction was still open, all of the one committed before the crash.
    done = sum(max(o, 0) for o in stable_committed(eos_kafka, f"{name}-counter", f"{name}.in").values())
    assert 0 < done < 2_000
    assert len(read_outputs(eos_kafka, f"{name}.out")) == done
    # The same instance (state directory) again: its init_transactions aborts what the crash left open.
    w = WorkerProc(topo, tmp_path / "w", subprocess_env, tmp_path / "w2.log", EOS)
    wait_drained(eos_kafka, f"{name}-counter", f"{name}.in", PARTS, 90)
    assert w.stop() == 0
    assert_exactly_once(read_outputs(eos_kafka, f"{name}.out"), expected)


@pytest.mark.parametrize("fencing", ["", "transaction", "off"])
def test_a_thawed_zombies_writes_are_fenced_by_its_transaction(
        eos_kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str,
        fencing: str) -> None:
    """A worker frozen (SIGSTOP) mid-batch past its session loses its partitions; the other worker redoes the
    batch. Thawed, the zombie goes on to commit. By default ("") the freeze guard of at-least-once stops it
    first and aborts the transaction. With that guard off ("transaction") the transaction's own fence shows:
    its offsets carry the old group generation, the broker refuses them and the whole transaction aborts.
    With the offsets outside the transaction too ("off"), nothing fences the zombie: its outputs appear twice."""
    name = f"eosfreeze{unique}"
    topo = counter_topology(tmp_path, name, PARTS, kafka=eos_kafka)
    # The freeze must end before the coordinator's own timeout would abort the zombie's transaction.
    env = {**subprocess_env, "STREAMS_FAULT_ACTION": "stop", "STREAMS_TEST_FENCING": fencing,
           "KAFKA_PRODUCER_TRANSACTION_TIMEOUT_MS": "120000"}
    zombie = WorkerProc(topo, tmp_path / "a", env, tmp_path / "a.log", [*EOS, "--max-batch", "200"],
                        fault=("after_outputs_produced", 3))
    expected = produce_counts(eos_kafka, f"{name}.in", 2_000, 100)
    wait_until(lambda: "fault point after_outputs_produced reached" in zombie.log_text(), 60, "the freeze")
    other = WorkerProc(topo, tmp_path / "b", subprocess_env, tmp_path / "b.log", EOS)
    wait_drained(eos_kafka, f"{name}-counter", f"{name}.in", PARTS, 90)  # the other worker redid everything
    zombie.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: zombie.log_text().count("worker: assigned partitions") >= 2, 60, "the zombie's rejoin")
    wait_drained(eos_kafka, f"{name}-counter", f"{name}.in", PARTS, 90)
    assert other.stop() == 0
    assert zombie.stop() == 0
    outputs = read_outputs(eos_kafka, f"{name}.out")
    check_zombie(fencing, zombie.log_text(), outputs, expected)


def test_a_zombie_frozen_past_its_transaction_timeout_writes_nothing(
        eos_kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    """Frozen longer than transaction.timeout.ms, with the freeze guard off. Which way the zombie learns that
    its transaction is gone depends on whether the coordinator's periodic check aborted it before the thaw:
    if not, its records timed out (librdkafka bounds message.timeout.ms by the transaction timeout), the
    transaction is abortable, and the worker aborts and goes on; if so, the coordinator bumped the producer
    epoch, which librdkafka reports as fatal, and the worker ends (ProducerFencedError) for a supervisor to
    restart. Either way nothing it did in the frozen batch becomes visible."""
    name = f"eosexpired{unique}"
    topo = counter_topology(tmp_path, name, PARTS, kafka=eos_kafka)
    env = {**subprocess_env, "STREAMS_FAULT_ACTION": "stop", "STREAMS_TEST_FENCING": "transaction",
           "KAFKA_PRODUCER_TRANSACTION_TIMEOUT_MS": "3000"}
    zombie = WorkerProc(topo, tmp_path / "a", env, tmp_path / "a.log", [*EOS, "--max-batch", "200"],
                        fault=("after_outputs_produced", 3))
    expected = produce_counts(eos_kafka, f"{name}.in", 2_000, 100)
    wait_until(lambda: "fault point after_outputs_produced reached" in zombie.log_text(), 60, "the freeze")
    other = WorkerProc(topo, tmp_path / "b", subprocess_env, tmp_path / "b.log", EOS)
    wait_drained(eos_kafka, f"{name}-counter", f"{name}.in", PARTS, 90)
    zombie.proc.send_signal(signal.SIGCONT)

    def settled() -> bool:
        text = zombie.log_text()
        return zombie.proc.poll() is not None or text.count("worker: assigned partitions") >= 2

    wait_until(settled, 60, "the zombie to rejoin or end")
    wait_drained(eos_kafka, f"{name}-counter", f"{name}.in", PARTS, 90)
    assert other.stop() == 0
    rc = zombie.stop()
    text = zombie.log_text()
    if rc == 0:
        assert "transaction aborted" in text
    else:
        assert "ProducerFencedError" in text
    assert_exactly_once(read_outputs(eos_kafka, f"{name}.out"), expected)


def check_zombie(fencing: str, log: str, outputs: list[dict[str, object]],
                 expected: dict[str, tuple[int, int]]) -> None:
    if fencing == "transaction":
        assert "transaction aborted: send_offsets_to_transaction" in log
        assert_exactly_once(outputs, expected)
    elif not fencing:
        assert "transaction aborted: the process was frozen longer than its group session" in log
        assert_exactly_once(outputs, expected)
    else:
        dupes = [e for e, n in Counter(o["event_id"] for o in outputs).items() if n > 1]
        assert dupes, "without the fence the zombie's batch is committed a second time"
        assert {str(o["event_id"]) for o in outputs} == {f"ev-{i}" for i in range(2_000)}


class _Alarm:
    """Arms a timer on an entity's first event; the timer's record, back on the input, causes the output. So
    each output needs a transaction that held nothing but a fired timer to commit."""

    def __init__(self, out: str) -> None:
        self.out = out

    def decode(self, record: InputRecord) -> dict[str, object]:
        return dict(orjson.loads(record.value or b"{}"))

    def load_state(self, raw: bytes) -> str:
        return str(orjson.loads(raw))

    def dump_state(self, state: str) -> bytes:
        return orjson.dumps(state)

    def process(self, state: str | None, event: dict[str, object], record: InputRecord,
                now_ms: int) -> Step[str]:
        if "due" in event:
            body = orjson.dumps({"key": record.key.decode(), "event_id": record.event_id})
            return Step("done", (OutputRecord(self.out, record.key, body),),
                        (TimerChange("alarm", int(str(event["due"])), None),))
        if state is not None:
            return Step(UNCHANGED)
        due = now_ms + 300
        fire = OutputRecord(record.topic, record.key, orjson.dumps({"due": due}),
                            ((H_EVENT_ID, b"alarm-" + record.key),))
        return Step("armed", (), (TimerChange("alarm", due, fire),))


def test_a_transaction_holding_only_fired_timers_is_committed(
        eos_kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    name = f"eostimer{unique}"
    topo = load(counter_topology(tmp_path, name, PARTS, kafka=eos_kafka))
    proc = topo.processor(None)
    kafka = replace(eos_kafka, consumer={"session.timeout.ms": 6000, **eos_kafka.consumer})
    settings = WorkerSettings(group=f"{name}-alarm", state_dir=tmp_path / "w", commit_interval_ms=50,
                              processing_guarantee="exactly_once")
    logs: list[str] = []
    worker = Worker(WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic),
                    _Alarm(f"{name}.out"), kafka, settings, logs.append)  # type: ignore[arg-type]
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        keys = [f"a{i}" for i in range(40)]
        p = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "murmur2_random"})
        for k in keys:
            p.produce(f"{name}.in", b"{}", k.encode(), headers=[(H_EVENT_ID, f"arm-{k}".encode())])
        assert p.flush(10) == 0
        wait_until(lambda: len(read_outputs(kafka, f"{name}.out")) >= len(keys), 60, "every alarm's output")
    finally:
        worker.stop()
        t.join(30)
    outputs = read_outputs(kafka, f"{name}.out")
    assert sorted(str(o["key"]) for o in outputs) == sorted(keys)
    assert {str(o["event_id"]) for o in outputs} == {f"alarm-{k}" for k in keys}
    assert worker.stats.timers_fired >= len(keys)


def test_a_restore_waits_for_a_transaction_open_on_the_changelog_and_applies_what_it_commits(
        eos_kafka: KafkaSettings, tmp_path: Path, unique: str) -> None:
    """A new owner's restore can start while the previous owner's last transaction is still open on the
    changelog (its markers are written after its offsets'). Stopping at that transaction's first record (where a
    read_committed reader sees the partition end) would lose its entities once it commits."""
    changelog, source = f"rwait{unique}-changelog", f"rwait{unique}.in"
    Admin(eos_kafka).ensure([TopicSpec(changelog, 1, 1, "compact")])
    tag = entity.topic_tag(source)

    def put(p: Producer, first: int, n: int) -> None:
        for i in range(first, first + n):
            p.produce(changelog, entity.encode(tag, i, [], b"v%d" % i), timers.ENTITY + b"k%d" % i, partition=0)

    owner = Producer({"bootstrap.servers": eos_kafka.bootstrap_servers, "transactional.id": f"rwait-{unique}"})
    owner.init_transactions()
    owner.begin_transaction()
    put(owner, 0, 5)
    owner.commit_transaction()
    owner.begin_transaction()
    put(owner, 5, 3)  # the previous owner's last batch: its input offsets (8) already count as committed
    assert owner.flush(10) == 0
    logs: list[str] = []
    restorer = Restorer(eos_kafka, f"rwait{unique}", changelog, 100, logs.append)
    db = PartitionStore(tmp_path / "p0", 0)
    try:
        restorer.start(db, {source: 8}, {source: 8})
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert not restorer.step(0.1), "the restore ended at the open transaction"
        assert any("waiting for the transaction open at offset 6" in line for line in logs), logs
        owner.commit_transaction()
        done: list[object] = []
        deadline = time.monotonic() + 30
        while not done and time.monotonic() < deadline:
            done = list(restorer.step(0.1))
        assert done, "the restore never ended after the transaction committed"
        assert [db.get(b"k%d" % i) is not None for i in range(8)] == [True] * 8
    finally:
        restorer.close()
        db.close()


# -- configuration and error mapping (no broker) ------------------------------------------------------------

def test_exactly_once_is_refused_on_the_embedded_broker_and_bad_values_are_named() -> None:
    check_guarantee("exactly_once", embedded_broker=False)
    check_guarantee("at_least_once", embedded_broker=True)
    with pytest.raises(ConfigError, match="embedded Tansu"):
        check_guarantee("exactly_once", embedded_broker=True)
    with pytest.raises(ConfigError, match="processing_guarantee"):
        WorkerSettings(group="g", state_dir=Path("x"), processing_guarantee="exactly-once")
    with pytest.raises(ConfigError, match=r"processors\.c\.processing_guarantee.*'twice'"):
        parse({"name": "t", "topics": {"a": {}}, "processors": {
            "c": {"processor": "counter", "inputs": ["a"], "processing_guarantee": "twice"}}}, "t.yaml")
    spec = parse({"name": "t", "topics": {"a": {}}, "processors": {
        "c": {"processor": "counter", "inputs": ["a"], "processing_guarantee": "exactly_once"}}}, "t.yaml")
    assert spec.processors["c"].processing_guarantee == "exactly_once"


def test_the_worker_cli_refuses_exactly_once_without_a_real_broker(tmp_path: Path) -> None:
    topo = counter_topology(tmp_path, "eoscli")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    for extra, needle in ((EOS, "exactly_once needs Apache Kafka"),
                          (["--processing-guarantee", "twice"], "invalid choice")):
        r = subprocess.run([sys.executable, "-m", "streams", "worker", "--topology", str(topo), *extra],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


class _Producer:
    """Raises the given error from every transactional call: the mapping under test is pure."""

    def __init__(self, err: KafkaError, times: int = 1) -> None:
        self.err, self.times, self.calls = err, times, 0

    def _maybe_raise(self, *_a: object) -> None:
        self.calls += 1
        if self.calls <= self.times:
            raise KafkaException(self.err)

    init_transactions = begin_transaction = commit_transaction = abort_transaction = _maybe_raise

    def flush(self, _timeout: float) -> int:
        return 0


def test_transaction_errors_map_to_typed_errors() -> None:
    logs: list[str] = []
    fatal = _Producer(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    t = Transactions(fatal, logs.append)
    with pytest.raises(ProducerFencedError, match="commit_transaction"):
        t.commit()
    with pytest.raises(ProducerFencedError, match="fenced earlier"):
        t.begin()  # a fenced producer is never used again
    abortable = _Producer(KafkaError(KafkaError.ILLEGAL_GENERATION, "old generation", txn_requires_abort=True))
    with pytest.raises(TransactionAbortedError, match="ILLEGAL_GENERATION"):
        Transactions(abortable, logs.append).commit()
    flaky = _Producer(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "moving", retriable=True), times=2)
    Transactions(flaky, logs.append).commit()
    assert flaky.calls == 3 and len(logs) == 2
    down = _Producer(KafkaError(KafkaError._TRANSPORT, "down", retriable=True), times=99)
    with pytest.raises(KafkaUnavailableError):
        Transactions(down, logs.append).commit(should_give_up=lambda: True)


class _StuckProducer(_Producer):
    """send_offsets_to_transaction blocks past its timeout, as librdkafka's does while the group coordinator it
    cached is gone; everything else answers."""

    def __init__(self) -> None:
        super().__init__(KafkaError(KafkaError.NO_ERROR), times=0)
        self.release = threading.Event()

    def send_offsets_to_transaction(self, *_a: object) -> None:
        self.release.wait(30)


def test_a_transactional_call_stuck_past_its_timeout_fences_the_producer_instead_of_hanging_the_worker() -> None:
    stuck = _StuckProducer()
    t = Transactions(stuck, [].append, timeout_s=0.2, stuck_grace_s=0.3)  # type: ignore[arg-type]
    t.begin()
    started = time.monotonic()
    with pytest.raises(ProducerFencedError, match=r"send_offsets_to_transaction: librdkafka did not return within 0.5s"
                       ):
        t.send_offsets([], object())
    assert 0.4 < time.monotonic() - started < 5
    with pytest.raises(ProducerFencedError, match="fenced earlier"):
        t.commit()  # nothing may overtake the stuck call
    stuck.release.set()
    ok = Transactions(_Producer(KafkaError(KafkaError.NO_ERROR), times=0), [].append, timeout_s=0.2,
                      stuck_grace_s=0.3)  # type: ignore[arg-type]
    ok.begin()
    ok.commit()  # calls that return in time pass through the helper thread unchanged
