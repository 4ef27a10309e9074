"""Consumer lag against a real broker: the numbers must equal the records a group has not consumed yet.

On the embedded broker this is the case ListOffsets(latest) gets wrong (multi-record last batches), so these
tests fail if the log end is ever taken from ListOffsets alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import TopicPartition

from streams.cli import main
from streams.config import KafkaSettings
from streams.kafka.admin import Admin
from streams.kafka.client import make_consumer, make_producer
from streams.kafka.lag import LagReader, UnknownGroupError, consumer_lag
from streams.topology import TopicSpec

pytestmark = pytest.mark.kafka

# Records per partition, produced in two flushes so that every partition's last batch holds several records.
FIRST = {0: 30, 1: 25, 2: 3}
SECOND = {0: 10, 1: 0, 2: 0}
TOTAL = {p: FIRST[p] + SECOND[p] for p in FIRST}
# What the group commits: partition 0 part-way, partition 1 fully, partition 2 never.
COMMITS = {0: 13, 1: 25}
EXPECTED_LAG = {0: 40 - 13, 1: 0, 2: 3}


@dataclass(frozen=True)
class Scenario:
    topic: str
    group: str


@pytest.fixture(scope="module")
def scenario(kafka: KafkaSettings) -> Iterator[Scenario]:
    u = uuid.uuid4().hex[:8]
    topic, group = f"lag-{u}", f"lag-group-{u}"
    Admin(kafka).ensure([TopicSpec(topic, 3)])
    producer = make_producer(kafka, {"linger.ms": 100})
    for batch in (FIRST, SECOND):
        for p, n in batch.items():
            for i in range(n):
                producer.produce(topic, value=f"{p}-{i}".encode(), partition=p)
        assert producer.flush(10) == 0

    consumer = make_consumer(kafka, group)  # FAST_GROUP_DEFAULTS: joins in ~3 s on the embedded broker
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 15
    while seen < sum(TOTAL.values()) and time.monotonic() < deadline:
        seen += sum(1 for m in consumer.consume(500, 0.2) if m.error() is None)
    assert seen == sum(TOTAL.values()), f"consumed {seen} records"
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in COMMITS.items()], asynchronous=False)
    consumer.close()
    yield Scenario(topic, group)


@pytest.mark.tansu
def test_lag_equals_unconsumed_records_after_batched_produce(kafka: KafkaSettings, scenario: Scenario) -> None:
    [group] = consumer_lag(kafka, scenario.group)

    assert group.group == scenario.group
    assert [(p.topic, p.partition) for p in group.partitions] == [(scenario.topic, p) for p in range(3)]
    by_part = {p.partition: p for p in group.partitions}
    assert {p: by_part[p].lag for p in by_part} == EXPECTED_LAG
    assert {p: by_part[p].log_end for p in by_part} == TOTAL
    assert {p: by_part[p].committed for p in by_part} == {0: 13, 1: 25, 2: None}
    assert all(p.log_start == 0 for p in group.partitions)
    assert group.total == sum(EXPECTED_LAG.values())


@pytest.mark.tansu
def test_embedded_listoffsets_is_short_so_the_test_above_means_something(
    kafka: KafkaSettings, scenario: Scenario
) -> None:
    """Guards the premise: on the embedded broker the naive log end is wrong for these very partitions; real
    Kafka answers it right, and the fetch-based log end agrees with it there."""
    probe = make_consumer(kafka, f"naive-{uuid.uuid4().hex[:8]}")
    try:
        naive = {p: probe.get_watermark_offsets(TopicPartition(scenario.topic, p), timeout=5)[1] for p in TOTAL}
    finally:
        probe.close()
    if kafka.tansu:
        assert naive != TOTAL, "Tansu's ListOffsets(latest) is now right: the fetch-based log end could be dropped"
    else:
        assert naive == TOTAL
    fetched = LagReader(kafka).watermarks((scenario.topic, p) for p in TOTAL)
    assert {p: fetched[(scenario.topic, p)].log_end for p in TOTAL} == TOTAL


def test_all_groups_listing_includes_the_group_with_the_same_numbers(kafka: KafkaSettings, scenario: Scenario) -> None:
    groups = {g.group: g for g in consumer_lag(kafka)}
    assert scenario.group in groups
    assert {p.partition: p.lag for p in groups[scenario.group].partitions} == EXPECTED_LAG


def test_group_with_nothing_committed_lags_by_the_whole_log(kafka: KafkaSettings, scenario: Scenario) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    [group] = consumer_lag(kafka, fresh, topics=[scenario.topic])
    assert {p.partition: (p.committed, p.lag) for p in group.partitions} == {p: (None, n) for p, n in TOTAL.items()}
    assert group.total == sum(TOTAL.values())


def test_unknown_group_is_an_error_naming_it(kafka: KafkaSettings, scenario: Scenario) -> None:
    with pytest.raises(UnknownGroupError, match="no consumer group 'nope-"):
        consumer_lag(kafka, f"nope-{uuid.uuid4().hex[:8]}")


def test_cli_json_reports_the_same_numbers(subprocess_env: dict[str, str], scenario: Scenario) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams", "lag", "--group", scenario.group, "--json"],
        env=subprocess_env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["group"], r["topic"], r["partition"], r["committed"], r["log_end"], r["lag"]) for r in rows] == [
        (scenario.group, scenario.topic, p, {0: 13, 1: 25}.get(p), TOTAL[p], EXPECTED_LAG[p]) for p in range(3)
    ]


def test_cli_unknown_group_is_one_line_and_nonzero(subprocess_env: dict[str, str], scenario: Scenario) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams", "lag", "--group", "no-such-group-xyz"],
        env=subprocess_env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "UnknownGroupError" in lines[0] and "'no-such-group-xyz'" in lines[0]


def test_cli_table_has_rows_and_a_total(
    kafka: KafkaSettings, scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lag", "--group", scenario.group, "--bootstrap", kafka.bootstrap_servers]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"]
    assert lines[1].split() == [scenario.group, scenario.topic, "0", "13", "40", "27"]
    assert lines[3].split() == [scenario.group, scenario.topic, "2", "-", "3", "3"]
    assert lines[4].split() == [scenario.group, "(total)", "30"]


def test_cli_watch_refreshes_until_ctrl_c(
    kafka: KafkaSettings, scenario: Scenario, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("streams.cli.lag.sleep", sleep)
    argv = ["lag", "--group", scenario.group, "--json", "--watch", "--interval", "0.5",
            "--bootstrap", kafka.bootstrap_servers]
    assert main(argv) == 0
    refreshes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(refreshes) == 2 and sleeps == [0.5, 0.5]
    assert all(sum(r["lag"] for r in rows) == 30 for rows in refreshes)


def test_cli_refuses_without_a_broker_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["lag"]) == 2
    err = capsys.readouterr().err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err and "--bootstrap" in err
