"""A workflow declares its data fields once: the engine derives, versions and registers its state record, refuses
definitions that record or send what their contracts cannot hold, restores older versions' states, and
``streams workflow validate`` finds entities stranded in a state a new version removed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams import Field, WorkflowBuilder, data_fields, emit, record, record_with
from streams.cli import main
from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.errors import WorkflowDefinitionError
from streams.kafka.admin import Admin
from streams.kafka.client import read_to_end
from streams.processors.avro import envelope
from streams.processors.workflow import WorkflowProcessor
from streams.records import H_EVENT_ID, InputRecord
from streams.registry import RegistryServer
from streams.state import entity
from streams.topology import load
from streams.workflow import Driver, Event, WorkflowState, step
from streams.workflow.fields import avro_type, state_record
from support import WorkerProc, write_workflow_project

FLOWS = '''
from streams import Field, WorkflowBuilder, data_fields, emit, issue, record, record_with

def ticket(version=1, prefix="tk", bug="", drop_legacy=1):
    wf = WorkflowBuilder("ticket", input_topic=prefix + ".events", initial="new", version=version)
    if version == 1:
        wf.data(ticket_id=str, seats=int, legacy=str | None)
        wf.states("new", "holding", "review")
        wf.events("Requested", "Held", "Flagged", "Cleared")
        wf.on("Held", "holding", "review", when=lambda ctx: ctx.data["seats"] > 4, label="big")
        wf.on("Flagged", "holding", "review")
        wf.on("Cleared", "review", "booked")
    elif version == 0:  # declares nothing: its contracts may name a state record
        wf.states("new", "holding")
        wf.events("Requested", "Held")
    else:
        wf.data(ticket_id=str, seats=int, note=Field(str, default="none"))
        if drop_legacy:
            wf.drop("legacy")
        wf.states("new", "holding")
        wf.events("Requested", "Held")
    wf.terminal("booked", on_enter=[emit("Booked", prefix + ".results", data_fields("ticket_id"))])
    hold = data_fields("ticket_id", "seats")
    if bug == "payload":
        hold = data_fields("ticket_id")
    elif bug == "function":
        hold = lambda ctx: {"ticket_id": ctx.data["ticket_id"]}
    wf.command("Hold", topic=prefix + ".commands", payload=hold)
    wf.on("Requested", "new", "holding", do=[record("ticket_id", "seats"), issue("Hold")])
    held = [record_with(lambda ctx: {"extra": 1})] if bug == "record" else []
    wf.on("Held", "holding", "booked", do=held)
    return wf.build()
'''


def write_project(root: Path, prefix: str) -> Path:
    """Package ``ticketflow`` (the flows above, its contracts, a topology); returns the topology file."""
    ticket = {"ticket_id": "string"}
    return write_workflow_project(
        root, prefix, "ticketflow", FLOWS,
        {"Requested": {**ticket, "seats": "long"}, "Held": ticket, "Flagged": ticket, "Cleared": ticket,
         "Booked": ticket, "Hold": {**ticket, "seats": "long", "attempt": "int"}},
        {f"{prefix}.events": ["tickets.Requested", "tickets.Held", "tickets.Flagged", "tickets.Cleared",
                              "streams.common.TimerFired"],
         f"{prefix}.results": ["tickets.Booked"], f"{prefix}.commands": ["tickets.Hold"]},
        "tickets", "ticket", {"prefix": prefix, "version": 1}, [f"{prefix}.results", f"{prefix}.commands"])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    topology = write_project(tmp_path, "tk")
    monkeypatch.syspath_prepend(str(tmp_path))
    return topology


@pytest.fixture
def registry() -> Iterator[str]:
    with RegistryServer(port=0) as server:  # memory-only
        yield server.url


def processor(topology: Path, registry: str, **params: Any) -> WorkflowProcessor:
    options = dict(load(topology).processor("tickets").options)
    return WorkflowProcessor({**options, "params": {**options["params"], **params}, "registry": registry}, [])


def run(proc: WorkflowProcessor, state: WorkflowState | None, name: str, payload: dict[str, Any],
        n: int = 1) -> WorkflowState | None:
    event = Event(name, f"e{n}", "T1", {"ticket_id": "T1", **payload}, 1_700_000_000_000 + n)
    rec = InputRecord("tk.events", 0, n, b"T1", None, event.timestamp_ms)
    out = proc.process(state, event, rec, event.timestamp_ms).state
    return out if isinstance(out, WorkflowState) else state


# --- at build: pure checks ----------------------------------------------------------------------------------


def small(**data: Any) -> WorkflowBuilder:
    wf = WorkflowBuilder("small", input_topic="s.events", initial="new")
    wf.data(**data)
    wf.states("new")
    wf.terminal("done", on_enter=[emit("Done", "s.results", data_fields("id", "total"))])
    wf.events("Go")
    wf.on("Go", "new", "done", do=[record("id", "amount")])
    return wf


def test_recording_or_reading_an_undeclared_field_fails_the_build_naming_field_and_action() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        small(id=str).build()
    assert set(exc.value.problems) == {
        "transition new --Go--> done: record('id', 'amount') records data field 'amount', which is not declared "
        "in data(...)",
        "entering state 'done': emit('Done') takes data field 'total' into its payload, which is not declared "
        "in data(...)",
    }
    assert small(id=str, amount=int, total=int).build().data is not None


def test_type_declarations_map_to_avro_and_bad_ones_are_named() -> None:
    assert avro_type(int) == "long" and avro_type(list[str]) == {"type": "array", "items": "string"}
    assert avro_type(dict[str, float]) == {"type": "map", "values": "double"}
    assert avro_type(str | None) == ["null", "string"] and avro_type("a.LineItem") == "a.LineItem"
    d = small(id=str, amount=int, total=int | None, note=Field(str, default="")).build()
    assert d.data is not None and d.data["total"] == {"name": "total", "type": ["null", "long"], "default": None}
    assert d.data["note"] == {"name": "note", "type": "string", "default": ""}
    with pytest.raises(WorkflowDefinitionError) as exc:
        small(id=str, amount=int, total=int, state=str, when=set).build()
    assert {p.split(":")[0] for p in exc.value.problems} == {"data field 'state'", "data field 'when'"}


def test_the_driver_refuses_a_field_a_record_with_function_records_undeclared() -> None:
    wf = WorkflowBuilder("small", input_topic="s.events", initial="new")
    wf.data(id=str, amount=int)
    wf.states("new")
    wf.terminal("done")
    wf.events("Go")
    wf.on("Go", "new", "done", when=lambda ctx: ctx.payload.get("odd", False), label="odd",
          do=[record_with(lambda ctx: {"bonus": 1})])
    wf.on("Go", "new", "done", do=[record("id", "amount")])
    d = Driver(wf.build())
    d.send("Go", "k1", {"id": "k1", "amount": 3})
    assert d.state("k1") is not None and dict(d.state("k1").data) == {"id": "k1", "amount": 3}  # type: ignore[union-attr]
    with pytest.raises(WorkflowDefinitionError, match=r"the transition new --Go--> done recorded data field\(s\) "
                                                      r"'bonus' that its state record streams.workflows.SmallState"):
        d.send("Go", "k2", {"id": "k2", "amount": 3, "odd": True})
    assert d.state("k2") is None


def test_a_record_without_declared_fields_keeps_working_undeclared() -> None:
    wf = WorkflowBuilder("free", input_topic="f.events", initial="new")
    wf.states("new")
    wf.terminal("done")
    wf.events("Go")
    wf.on("Go", "new", "done", do=[record("anything")])
    d = wf.build()
    assert d.data is None and d.stored_record() is None


# --- at worker start: the catalogue -------------------------------------------------------------------------


def test_the_worker_refuses_a_payload_missing_a_required_field_naming_command_field_and_action(
        project: Path, registry: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        processor(project, registry, bug="payload")
    assert exc.value.problems == ("command 'Hold' issued by transition new --Requested--> holding: the payload "
                                  "misses required field 'seats' of record Hold",)


def test_a_payload_function_missing_a_field_stops_the_worker_when_it_runs(project: Path, registry: str) -> None:
    proc = processor(project, registry, bug="function")
    with pytest.raises(WorkflowDefinitionError, match=r"in state 'new' on Requested, the payload of Hold misses "
                                                      r"required field\(s\) 'seats'"):
        run(proc, None, "Requested", {"seats": 2})


def test_a_recorded_field_the_state_record_lacks_stops_the_worker_and_is_never_dropped(
        project: Path, registry: str) -> None:
    proc = processor(project, registry, bug="record")
    held = run(proc, None, "Requested", {"seats": 2})
    assert held is not None and held.state == "holding"
    res = step(proc.definition, held, Event("Held", "e2", "T1", {"ticket_id": "T1"}, 1_700_000_000_002), 0)
    assert res.state is not None and res.state.data["extra"] == 1
    with pytest.raises(WorkflowDefinitionError, match=r"transition holding --Held--> booked recorded data field\(s\) "
                                                      r"'extra' that its state record .*TicketState does not have"):
        proc.dump_state(res.state)


# --- versions -----------------------------------------------------------------------------------------------


def test_a_hand_written_state_record_lacking_a_recorded_field_stops_the_worker(
        project: Path, registry: str) -> None:
    """The former silent drop: a field recorded but missing from the record named in subjects.yaml."""
    schemas = project.parent / "schemas"
    record = state_record("tickets.TicketState", "ticket", 1, {"ticket_id": {"name": "ticket_id", "type": "string"}})
    (schemas / "TicketState.avsc").write_text(json.dumps(record))
    (schemas / "subjects.yaml").write_text((schemas / "subjects.yaml").read_text()
                                           + "  ticket-state: [tickets.TicketState]\n")
    proc = processor(project, registry, version=0)
    assert proc.state_record == "tickets.TicketState" and proc.data_fields == ("ticket_id",)
    held = run(proc, None, "Requested", {"seats": 2})
    assert held is not None and dict(held.data) == {"ticket_id": "T1", "seats": 2}
    with pytest.raises(WorkflowDefinitionError, match=r"new --Requested--> holding recorded data field\(s\) 'seats' "
                                                      r"that its state record tickets.TicketState does not have"):
        proc.dump_state(held)


def test_a_state_stored_by_version_1_restores_under_version_2(project: Path, registry: str) -> None:
    v1 = processor(project, registry)
    assert v1.state_record == "streams.workflows.TicketState" and v1.schema_version == 1
    held = run(v1, None, "Requested", {"seats": 2})
    assert held is not None
    raw = v1.dump_state(held)
    v2 = processor(project, registry, version=2)  # adds `note` (a default), drops `legacy` explicitly
    restored = v2.load_state(raw)
    assert restored.state == "holding" and dict(restored.data) == {"ticket_id": "T1", "seats": 2, "note": "none"}
    again = v2.dump_state(restored)
    assert again != raw and v2.load_state(again) == restored  # now stored as version 2
    assert v2.serde.decode(again)[1]["schema_version"] == 2


def test_a_field_version_2_loses_without_saying_so_stops_the_worker(project: Path, registry: str) -> None:
    v1 = processor(project, registry)
    v1.dump_state(run(v1, None, "Requested", {"seats": 2}) or pytest.fail("no state"))
    with pytest.raises(WorkflowDefinitionError, match=r"version 2 no longer declares data field\(s\) 'legacy' .*"
                                                      r"drop\('legacy'\)"):
        processor(project, registry, version=2, drop_legacy=0)


def test_the_orders_example_reads_states_stored_with_its_former_hand_written_record() -> None:
    """OrderState.avsc was replaced by the record derived from the saga's declarations: same name, same fields."""
    from streams.lab import bench_data as data

    with RegistryServer(port=0) as server:
        proc = WorkflowProcessor({"workflow": "orders", "registry": server.url}, [])
        former = json.loads((Path(__file__).parent / "golden" / "OrderState.v1.avsc").read_text())
        raw = entity.decode(data.state_templates(proc, "p" * 12, 3)[4]).state or b""
        from streams.processors.avro import default_schemas

        cat = Catalogue.load(default_schemas()).with_record(former, "orders-state-v1")
        old = Serde(RegistryClient(server.url), cat).encoder("orders-state-v1", "streams.orders.OrderState")
        body = proc.serde.decode(raw)[1]
        stored_by_v1 = old(body)
        assert stored_by_v1[5:] == raw[5:] and stored_by_v1[:5] != raw[:5]  # same body, the former schema's id
        assert proc._decode_state(stored_by_v1) == proc.load_state(raw)


# --- streams workflow validate ------------------------------------------------------------------------------


@pytest.mark.kafka
def test_validate_reports_in_flight_entities_in_a_state_version_2_removed(
        kafka: KafkaSettings, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"tk-{unique}"
    topology = write_project(tmp_path, prefix)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = load(topology)
    Admin(kafka).ensure(spec.all_topics())
    changelog = spec.processor("tickets").changelog
    with RegistryServer(port=0) as server:
        v1 = processor(topology, server.url, prefix=prefix)
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        for n, (key, flow) in enumerate([("T1", ["Requested"]), ("T2", ["Requested", "Flagged"]),
                                         ("T3", ["Requested", "Flagged"])]):
            st: WorkflowState | None = None
            for i, name in enumerate(flow):
                st = run(v1, st, name, {"seats": 2}, 10 * n + i)
            assert st is not None
            producer.produce(changelog, entity.encode(1, n, [], v1.dump_state(st)), b"d" + key.encode(), partition=0)
        producer.produce(changelog, None, b"dT3", partition=0)  # T3 finished and was deleted
        assert producer.flush(10) == 0
        args = ["workflow", "validate", "ticketflow.flows:ticket", "--topology", str(topology), "--registry",
                server.url, "--bootstrap", kafka.bootstrap_servers]
        assert main(args) == 0, capsys.readouterr().out  # version 1 still has every stored state
        out = capsys.readouterr().out
        assert f"changelog {changelog}: 2 entities (version 1: 2)" in out
        assert main([*args, "--param", "version=2"]) == 1
        out = capsys.readouterr().out
        assert "ticket: fits the contracts of processor 'tickets' (state record streams.workflows.TicketState, " \
               "version 2)" in out
        assert "ticket: 1 in-flight entities are in state 'review', which version 2 no longer has: T2" in out
        assert main([*args, "--param", "version=2", "--param", "drop_legacy=0"]) == 2
        assert "no longer declares data field(s) 'legacy'" in capsys.readouterr().err


@pytest.mark.kafka
def test_a_worker_stops_on_a_payload_bug_instead_of_dead_lettering(
        kafka: KafkaSettings, subprocess_env: dict[str, str], tmp_path: Path, unique: str) -> None:
    prefix = f"tkbug-{unique}"
    topology = write_project(tmp_path, prefix)
    topology.write_text(topology.read_text().replace("version: 1}", "version: 1, bug: function}")
                        + f"dlq_topic: {prefix}.dlq\n")
    spec = load(topology)
    Admin(kafka).ensure(spec.all_topics())
    with RegistryServer(port=0) as server:
        serde = Serde(RegistryClient(server.url), Catalogue.load(spec.schemas or tmp_path))
        body = {"ticket_id": "T1", "seats": 2, "envelope": envelope("ev-1", "T1", "tickets.Requested", 1, None)}
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        producer.produce(f"{prefix}.events", serde.encode(f"{prefix}.events", "tickets.Requested", body), b"T1",
                         headers=[(H_EVENT_ID, b"ev-1")])
        assert producer.flush(10) == 0
        env = {**subprocess_env, "SCHEMA_REGISTRY_URL": server.url,
               "PYTHONPATH": str(tmp_path) + os.pathsep + subprocess_env["PYTHONPATH"],
               "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "6000"}
        worker = WorkerProc(topology, tmp_path / "state", env, tmp_path / "worker.log")
        try:
            rc = worker.proc.wait(90)
        finally:
            worker.kill()
        log = worker.log_text()
        assert rc == 2, log[-3000:]
        assert ("streams: WorkflowDefinitionError: workflow 'ticket': in state 'new' on Requested, the payload of "
                "Hold misses required field(s) 'seats' of its record") in log, log[-3000:]
        assert "Traceback" not in log
        assert [m for m in read_to_end(kafka, f"{prefix}.dlq", 10)] == []  # nothing was dead-lettered


def test_validate_checks_a_topologys_contracts_without_a_broker(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["workflow", "validate", "orders", "--topology", "orders"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["orders: fits the contracts of processor 'orchestrator' (state record "
                       "streams.orders.OrderState, version 1)",
                       "orders: stored states not checked (no --bootstrap or KAFKA_BOOTSTRAP_SERVERS)"]
    assert main(["workflow", "validate", "orders", "--topology", "orders", "--processor", "payment"]) == 2
    assert capsys.readouterr().err == ("streams: ConfigError: --processor payment: it runs 'payment-service', "
                                       "not a workflow\n")
