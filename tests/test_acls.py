"""`streams acls`: the grants one worker needs, derived from its topology (pure), and their command lines."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from streams.cli import main
from streams.ops.acls import (
    CLUSTER,
    GROUP,
    PREFIXED,
    TOPIC,
    TRANSACTIONAL_ID,
    Grant,
    kafka_acls_commands,
    worker_grants,
)
from streams.topology import load

TOPO = """
name: shop
topics:
  in: {partitions: 2}
  out: {partitions: 2}
  other: {partitions: 2}
processors:
  p:
    processor: counter
    inputs: [in]
    outputs: [out]
    store: s
dlq_topic: shop.dlq
"""


def _topo(tmp: Path, extra: str = "") -> Path:
    path = tmp / "shop.yaml"
    path.write_text(TOPO + extra)
    return path


def _ops(grants: list[Grant], resource: str, name: str) -> set[str]:
    return {g.operation for g in grants if (g.resource, g.name) == (resource, name)}


def test_a_worker_reads_inputs_writes_outputs_and_owns_its_changelog_group_and_restore_group(tmp_path: Path) -> None:
    topo = load(_topo(tmp_path))
    proc = topo.processor("p")
    grants = worker_grants(topo, proc, create_topics=False)
    assert _ops(grants, TOPIC, "in") == {"Read", "Write", "Describe"}  # Write: misrouted records are re-routed
    assert _ops(grants, TOPIC, "out") == {"Write", "Describe"}
    assert _ops(grants, TOPIC, proc.changelog) == {"Read", "Write", "Describe"}
    assert _ops(grants, TOPIC, "shop.dlq") == {"Write", "Describe"}
    assert _ops(grants, TOPIC, "other") == set()  # another processor's topic: nothing without topic creation
    assert _ops(grants, GROUP, "shop-p") == {"Read", "Describe"}
    assert _ops(grants, GROUP, "shop-p.restore") == {"Describe"}  # looked up, never joined
    assert not [g for g in grants if g.resource in (TRANSACTIONAL_ID, CLUSTER) or g.operation == "Create"]
    assert grants == sorted(set(grants))


def test_topic_creation_needs_create_on_every_topic_of_the_topology(tmp_path: Path) -> None:
    topo = load(_topo(tmp_path))
    grants = worker_grants(topo, topo.processor("p"), "g1")
    for spec in topo.all_topics():
        assert {"Create", "Describe"} <= _ops(grants, TOPIC, spec.name), spec.name
    assert _ops(grants, GROUP, "g1") == {"Read", "Describe"}


def test_dead_lettering_misrouted_records_needs_no_write_on_inputs(tmp_path: Path) -> None:
    topo = load(_topo(tmp_path, "misrouted: dlq\n"))
    assert _ops(worker_grants(topo, topo.processor("p"), create_topics=False), TOPIC, "in") == {"Read", "Describe"}


def test_exactly_once_and_http_add_transactional_ids_idempotence_and_the_endpoints_topic(tmp_path: Path) -> None:
    topo = load(_topo(tmp_path))
    grants = worker_grants(topo, topo.processor("p"), "g", exactly_once=True, http=True, create_topics=False)
    assert {g for g in grants if g.resource == TRANSACTIONAL_ID} == {
        Grant(TRANSACTIONAL_ID, "g", "Write", PREFIXED), Grant(TRANSACTIONAL_ID, "g", "Describe", PREFIXED)}
    assert _ops(grants, CLUSTER, "kafka-cluster") == {"IdempotentWrite"}
    assert _ops(grants, TOPIC, "g.endpoints") == {"Read", "Write", "Describe"}


def test_command_lines_group_operations_per_resource(tmp_path: Path) -> None:
    topo = load(_topo(tmp_path))
    grants = worker_grants(topo, topo.processor("p"), "g", exactly_once=True, create_topics=False)
    lines = kafka_acls_commands(grants, "User:w", "k:9093")
    assert "kafka-acls.sh --bootstrap-server k:9093 --add --allow-principal User:w --operation Describe " \
           "--operation Read --operation Write --topic in" in lines
    assert "kafka-acls.sh --bootstrap-server k:9093 --add --allow-principal User:w --operation Describe " \
           "--operation Write --transactional-id g --resource-pattern-type prefixed" in lines
    assert any(line.endswith("--operation IdempotentWrite --cluster") for line in lines)
    # Every line lists exactly the operations granted on its resource: nothing more, nothing lost.
    assert sum(shlex.split(line).count("--operation") for line in lines) == len(grants)


def test_cli_prints_every_processor_or_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acls", "--topology", str(_topo(tmp_path)), "--principal", "svc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# p (group shop-p)\n")
    assert "--allow-principal User:svc" in out and "--operation Create" in out
    assert main(["acls", "--topology", str(_topo(tmp_path)), "--principal", "User:svc", "--processor", "p",
                 "--no-create-topics", "--processing-guarantee", "exactly_once"]) == 0
    out = capsys.readouterr().out
    assert "--operation Create" not in out and "--transactional-id shop-p" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--principal", "a b"], "--principal"),
    (["--principal", "w", "--processor", "nope"], "nope"),
    (["--principal", "w", "--group", "g"], "--group"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                            needle: str) -> None:
    assert main(["acls", "--topology", str(_topo(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
