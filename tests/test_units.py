"""Unit tests of pure code: the entity envelope, topology validation, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import KafkaSettings, WorkerSettings
from streams.errors import ConfigError, TopologyError
from streams.records import H_EVENT_ID, InputRecord, OutputRecord
from streams.runtime.worker import output_id
from streams.state import entity, timers
from streams.topology import load, parse


def test_envelope_round_trips_and_exposes_its_source() -> None:
    ids = entity.remember([], "ev-1", 32)
    raw = entity.encode(entity.topic_tag("orders"), 41, ids, b"\x00state")
    e = entity.decode(raw)
    assert (e.source_tag, e.source_offset, e.state) == (entity.topic_tag("orders"), 41, b"\x00state")
    assert e.seen("ev-1") and not e.seen("ev-2")
    assert entity.source_of(raw) == (entity.topic_tag("orders"), 41)


def test_dedupe_window_keeps_the_most_recent_ids() -> None:
    ids: list[bytes] = []
    for i in range(10):
        ids = entity.remember(ids, f"e{i}", 4)
    e = entity.decode(entity.encode(0, 0, ids, b""))
    assert [e.seen(f"e{i}") for i in range(10)] == [False] * 6 + [True] * 4


def test_long_event_ids_are_hashed_not_truncated() -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    e = entity.decode(entity.encode(0, 0, entity.remember([], a, 8), b""))
    assert e.seen(a) and not e.seen(b)


def test_output_ids_are_deterministic_and_distinct() -> None:
    assert output_id(b"k", "e1", 0) == output_id(b"k", "e1", 0)
    assert len({output_id(b"k", "e1", 0), output_id(b"k", "e1", 1), output_id(b"k", "e2", 0),
                output_id(b"j", "e1", 0)}) == 4


def test_event_id_falls_back_to_the_log_position() -> None:
    assert InputRecord("t", 2, 9, b"k", b"v", 0).event_id == "t/2/9"
    assert InputRecord("t", 2, 9, b"k", b"v", 0, ((H_EVENT_ID, b"abc"),)).event_id == "abc"


def _topo(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "app",
        "topics": {"a": {"partitions": 4}, "b": {"partitions": 4}, "o": {"partitions": 2}},
        "processors": {"p": {"processor": "counter", "inputs": ["a", "b"], "outputs": ["o"]}},
    }
    base.update(over)
    return base


def test_topology_derives_changelog_and_dlq() -> None:
    t = parse(_topo())
    names = {s.name: s for s in t.all_topics()}
    assert names["app-p-changelog"].partitions == 4
    assert names["app-p-changelog"].cleanup_policy == "compact"
    assert "app.dlq" in names
    assert t.default_group(t.processor(None)) == "app-p"


@pytest.mark.parametrize(("data", "message"), [
    (_topo(topics={"a": {"partitions": 4}, "b": {"partitions": 3}, "o": {}}), "not co-partitioned (a=4, b=3)"),
    (_topo(processors={"p": {"processor": "counter", "inputs": ["zz"]}}), "'zz' is not declared"),
    (_topo(topics={"a": {"partitions": 0}}, processors={"p": {"processor": "c", "inputs": ["a"]}}),
     "topics.a.partitions"),
    (_topo(topics={"a": {"partitons": 4}}, processors={"p": {"processor": "c", "inputs": ["a"]}}),
     "unknown keys ['partitons']"),
    (_topo(topics={"a": {"cleanup_policy": "keep"}}, processors={"p": {"processor": "c", "inputs": ["a"]}}),
     "cleanup_policy"),
    (_topo(processors={}), "at least one processor"),
    (_topo(name="bad name!"), "'name'"),
])
def test_topology_errors_name_the_problem(data: dict[str, object], message: str) -> None:
    with pytest.raises(TopologyError, match=None) as exc:
        parse(data, "f.yaml")
    assert message in str(exc.value) and str(exc.value).startswith("f.yaml")


def test_topology_variables_expand_with_defaults(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("name: ${NS:-}x\ntopics: {${NS:-}in: {}}\nprocessors: {p: {processor: c, inputs: [${NS:-}in]}}\n")
    assert load(f, {}).name == "x"
    assert load(f, {"NS": "dev-"}).topics.keys() == {"dev-in"}
    f.write_text("name: ${MISSING}\n")
    with pytest.raises(TopologyError, match=r"\$\{MISSING\} is not set"):
        load(f, {})


def test_settings_validate_and_redact_secrets() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        WorkerSettings(group="g", state_dir=Path("."), max_batch=0)
    k = KafkaSettings.from_env(env={"KAFKA_BOOTSTRAP_SERVERS": "h:9", "KAFKA_SASL_PASSWORD": "hunter2",
                                    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    assert k.common()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(k.redacted()) and k.redacted()["sasl.mechanism"] == "SCRAM-SHA-512"
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        KafkaSettings.from_env(env={})


def test_security_settings_reach_every_kafka_client() -> None:
    from streams.kafka.client import consumer_config

    k = KafkaSettings.from_env(env={
        "KAFKA_BOOTSTRAP_SERVERS": "b:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw",
        "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem", "KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/c.pem",
        "KAFKA_SSL_KEY_LOCATION": "/etc/k.pem"})
    conf = consumer_config(k, "g")
    for prop, value in (("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-256"),
                        ("sasl.username", "svc"), ("sasl.password", "pw"), ("ssl.ca.location", "/etc/ca.pem"),
                        ("ssl.certificate.location", "/etc/c.pem"), ("ssl.key.location", "/etc/k.pem")):
        assert conf[prop] == value, prop
    assert k.common()["security.protocol"] == "SASL_SSL"  # what producers, admin and restore consumers use


def test_any_librdkafka_property_can_be_set_per_client_kind() -> None:
    from streams.kafka.client import consumer_config, producer_config

    k = KafkaSettings.from_env(env={"KAFKA_BOOTSTRAP_SERVERS": "b:9", "KAFKA_CONSUMER_FETCH_WAIT_MAX_MS": "25",
                                    "KAFKA_PRODUCER_LINGER_MS": "1", "KAFKA_PRODUCER_": "ignored"})
    consumer, producer = consumer_config(k, "g"), producer_config(k)
    assert consumer["fetch.wait.max.ms"] == "25" and producer["linger.ms"] == "1"  # the env wins over our defaults
    assert "linger.ms" not in consumer and producer["enable.idempotence"] is True
    assert "" not in producer


def test_trace_context_is_a_deterministic_child() -> None:
    from streams.runtime import tracing

    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    a = tracing.child(parent, "e1", "out-1")
    assert a == tracing.child(parent, "e1", "out-1")  # a re-sent record is byte-identical
    assert tracing.trace_id_of(a) == "0af7651916cd43dd8448eb211c80319c" and a != parent
    assert tracing.child(parent, "e1", "out-2") != a
    assert tracing.trace_id_of(tracing.child(None, "e9", "o")) == tracing.trace_id_of(tracing.root("e9"))


def test_due_timers_read_the_index_only_when_one_may_be_due(tmp_path: Path) -> None:
    from collections.abc import Iterator

    from streams.runtime.due import DueTimers
    from streams.state import timers
    from streams.state.store import PartitionStore

    class Counting(PartitionStore):
        reads = 0

        def timers(self) -> Iterator[tuple[bytes, bytes]]:
            Counting.reads += 1
            return super().timers()

    store = Counting(tmp_path / "p0", 0)
    later, soon = timers.index_key(5_000, b"k", "late"), timers.index_key(1_000, b"k", "soon")
    store.write({later: b"L"})
    due = DueTimers()
    assert list(due.due(0, store, {}, {}, 500)) == [] and Counting.reads == 1  # nothing known: the index is read
    assert list(due.due(0, store, {}, {}, 4_999)) == [] and Counting.reads == 1  # bound 5,000 from that read
    due.staged(0, 1_000)  # a timer staged in the current batch, not in the store yet
    assert list(due.due(0, store, {}, {}, 1_000)) == [] and Counting.reads == 2
    due.sealed()  # its batch is in flight (pipelined commit): the bound stays lowered until it is written
    assert list(due.due(0, store, {}, {}, 1_000)) == [] and Counting.reads == 3
    store.write({soon: b"S"})
    due.committed()  # the batch reached the store: its due time lowers the bound
    assert list(due.due(0, store, {}, {}, 1_000)) == [(soon, b"S")] and Counting.reads == 4
    assert list(due.due(0, store, {}, {}, 1_000)) == []  # fired once, not again
    assert list(due.due(0, store, {}, {}, 6_000)) == [(later, b"L")]  # past the bound: read, and only the new one
    due.cleared(0, soon)
    assert list(due.due(0, store, {soon: None}, {}, 7_000)) == []  # being deleted in the current batch
    assert list(due.due(0, store, {}, {soon: None}, 7_000)) == []  # or in the batch in flight
    due.staged(0, 1_000)  # set again in the current batch after the batch in flight deleted it
    assert list(due.due(0, store, {soon: b"S"}, {soon: None}, 7_000)) == [(soon, b"S")]
    due.forget(0)  # reloaded: everything is looked at again
    assert [k for k, _ in due.due(0, store, {}, {}, 7_000)] == [soon, later]
    store.close()


def test_cli_numbers_are_checked_with_one_readable_line() -> None:
    from streams.cli.options import SECONDS, BadValue, number

    orders = number(int, 200, 1_000_000)
    assert orders("5000") == 5000 and SECONDS("0.5") == 0.5
    for check, text, message in ((orders, "5x", "must be a whole number, got '5x'"),
                                 (orders, "10", "must be within 200..1000000, got '10'"),
                                 (SECONDS, "0", "must be > 0.0, got '0'"), (SECONDS, "abc", "must be a number")):
        with pytest.raises(BadValue, match=message):
            check(text)


def test_held_records_keep_null_values_and_null_header_values() -> None:
    # A parked input is stored with its headers as they came; Kafka allows a null header value.
    rec = OutputRecord("orders.events", b"o-1", None, (("streams-id", b"e-1"), ("x-null", None), ("x-empty", b"")))
    assert timers.decode_record(timers.encode_record(rec)) == rec


def test_max_batch_is_bounded_by_what_consume_accepts(tmp_path: Path) -> None:
    # consume() raises ValueError past 1,000,000: refuse it up front, with the setting's name
    for bad in (0, 1_000_001):
        with pytest.raises(ConfigError, match=r"max_batch must be within 1\.\.1000000"):
            WorkerSettings(group="g", state_dir=tmp_path, max_batch=bad)
    assert WorkerSettings(group="g", state_dir=tmp_path, max_batch=1_000_000).max_batch == 1_000_000


def test_the_collector_policy_applies_for_a_block_and_is_undone() -> None:
    import gc

    from streams.runtime import gcpolicy

    before = gc.get_threshold()
    assert before != gcpolicy.THRESHOLDS
    with gcpolicy.tuned():
        assert gc.get_threshold() == gcpolicy.THRESHOLDS
        assert gc.get_freeze_count() > 0  # what existed when the block began is no longer scanned
    assert gc.get_threshold() == before
    gc.unfreeze()


def _samples() -> list[object]:
    """One instance of each hot-path dataclass whose __init__ is written out, every field a distinct value."""
    from streams.workflow.model import Event, Output, StepResult, Timer, Transition, WorkflowState

    timer = Timer("t", 5, "Fired", 2)
    trans = Transition(1, "a", "E", "b")
    state = WorkflowState("wf", "s", {"x": 1}, {"c": 2}, ("done",), (timer,), (trans,), "why", 10, 11)
    out = Output("Rec", "topic", "k", {"p": 1}, "oid", "cid", 3)
    return [
        InputRecord("in", 1, 2, b"k", b"v", 3, (("h", b"1"),)),
        OutputRecord("out", b"k", b"v", (("h", b"1"),)),
        entity.Entity(7, 8, [b"id"], b"state"),
        timer, trans, state, out,
        Event("E", "eid", "k", {"p": 1}, 4, 5, 6),
        StepResult(state, (out,), (timer,), (Timer("u", 6, "G", 3),), None, "ignored", 9, True),
    ]


@pytest.mark.parametrize("obj", _samples(), ids=lambda o: type(o).__name__)
def test_a_written_out_init_sets_every_field_in_order_with_the_dataclass_defaults(obj: object) -> None:
    """These classes write their __init__ out so mypyc compiles it (see streams.records); a field added to the
    class but not to its __init__, or two fields swapped, must fail here rather than corrupt a record."""
    import dataclasses

    cls = type(obj)
    fields = dataclasses.fields(obj)  # type: ignore[arg-type]
    values = [getattr(obj, f.name) for f in fields]
    assert len(set(map(repr, values))) == len(values), "the sample must give every field a distinct value"
    assert cls(*values) == obj
    assert cls(**{f.name: v for f, v in zip(fields, values, strict=True)}) == obj
    assert dataclasses.replace(obj) == obj  # type: ignore[type-var]
    required = [v for f, v in zip(fields, values, strict=True)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    bare = cls(*required)
    for f in fields[len(required):]:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert getattr(bare, f.name) == default, f"{cls.__name__}.{f.name}: __init__ default differs"


def test_consumer_defaults_are_chosen_per_broker_kind() -> None:
    from streams.kafka.client import consumer_config

    real = KafkaSettings.from_env(env={"KAFKA_BOOTSTRAP_SERVERS": "b:9"})
    tansu = KafkaSettings.from_env(env={"KAFKA_BOOTSTRAP_SERVERS": "b:9", "STREAMS_BROKER": "tansu"})
    assert real.broker == "kafka" and not real.tansu and tansu.tansu
    # Stock Kafka refuses a JoinGroup under group.min.session.timeout.ms (6000 by default).
    assert int(str(consumer_config(real, "g")["session.timeout.ms"])) >= 6000
    assert consumer_config(tansu, "g")["fetch.wait.max.ms"] == 10  # Tansu answers a waiting fetch only at its end
    assert consumer_config(real, "g")["fetch.wait.max.ms"] != 10
    over = KafkaSettings.from_env(env={"KAFKA_BOOTSTRAP_SERVERS": "b:9", "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "3000"})
    assert consumer_config(over, "g")["session.timeout.ms"] == "3000"  # the user's choice wins
    assert tansu.child_env() == {"KAFKA_BOOTSTRAP_SERVERS": "b:9", "STREAMS_BROKER": "tansu"}
    with pytest.raises(ConfigError, match="STREAMS_BROKER must be one of kafka, tansu, got 'redpanda'"):
        KafkaSettings.from_env(env={"KAFKA_BOOTSTRAP_SERVERS": "b:9", "STREAMS_BROKER": "redpanda"})


def test_patiently_waits_out_retryable_errors_only_and_stops_on_request() -> None:
    import threading

    from streams.errors import KafkaOperationError, SchemaRegistryUnavailableError, StoppedError, patiently

    calls: list[int] = []
    lines: list[str] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SchemaRegistryUnavailableError("registry timed out")
        return "ok"

    stop = threading.Event()
    assert patiently(flaky, stop, lines.append, "writer") == "ok"
    assert len(calls) == 3 and len(lines) == 2 and lines[0].startswith("writer: registry timed out; retrying in 0.1s")
    assert lines[1].endswith("retrying in 0.2s")

    def refused() -> str:
        raise KafkaOperationError("topic authorization failed")

    with pytest.raises(KafkaOperationError):  # retrying cannot help: raised at once, nothing logged
        patiently(refused, stop, lines.append, "writer")
    assert len(lines) == 2

    def down() -> str:
        raise SchemaRegistryUnavailableError("down")

    stop.set()
    with pytest.raises(StoppedError) as info:
        patiently(down, stop, lines.append, "writer")
    assert isinstance(info.value.__cause__, SchemaRegistryUnavailableError)


def test_backoff_doubles_from_its_first_pause_up_to_its_cap() -> None:
    from itertools import islice

    from streams.errors import backoff

    assert list(islice(backoff(), 8)) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert list(islice(backoff(0.2, 2.0), 5)) == [0.2, 0.4, 0.8, 1.6, 2.0]
