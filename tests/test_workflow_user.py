"""A user's own workflow, outside the repository: named by reference in a topology, with its own Avro contracts
(the topology's ``schemas:``, its own events only), run by a real worker against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.cli import main
from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.kafka.admin import Admin
from streams.registry import RegistryServer
from streams.topology import load
from support import WorkerProc, loans_decided, request_loans, write_loan_project

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.kafka
def test_a_topology_naming_a_users_workflow_runs_it_with_its_own_contracts(
        kafka: KafkaSettings, subprocess_env: dict[str, str], tmp_path: Path, unique: str) -> None:
    prefix = f"loans-{unique}"
    topology = write_loan_project(tmp_path / "project", prefix, review_ms=1500)
    topo = load(topology)
    assert topo.schemas == topology.parent / "schemas"
    assert topo.processor("loans").options["schemas"] == str(topology.parent / "schemas")
    Admin(kafka).ensure(topo.all_topics())
    with RegistryServer(port=0) as registry:
        serde = Serde(RegistryClient(registry.url), Catalogue.load(topology.parent / "schemas"))
        env = {**subprocess_env, "SCHEMA_REGISTRY_URL": registry.url,
               "PYTHONPATH": str(tmp_path / "project") + os.pathsep + subprocess_env["PYTHONPATH"],
               # Apache Kafka's default group.min.session.timeout.ms; the worker's 4 s suits the embedded broker
               "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "6000"}
        worker = WorkerProc(topology, tmp_path / "state", env, tmp_path / "worker.log")
        request_loans(kafka, serde, prefix)
        try:
            decided = loans_decided(kafka, serde, prefix)
        finally:
            worker.stop()
        assert decided == {"L1": "approved", "L2": "expired"}, worker.log_text()[-3000:]
        assert "Traceback" not in worker.log_text()
        # Its contracts declare no state record, so the state was stored in the engine's generic one.
        state = RegistryClient(registry.url).version("loans-state-value")
        assert orjson.loads(state.schema)["name"] == "streams.common.WorkflowState"


def test_schemas_register_takes_a_projects_contracts_from_its_topology(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topology = write_loan_project(tmp_path, "loans")
    with RegistryServer(port=0) as registry:
        assert main(["schemas", "register", "--topology", str(topology), "--registry", registry.url]) == 0
        lines = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
        # a multi-type topic: its union under <topic>-value, each record under <topic>-<record>
        # (TopicRecordNameStrategy, what stock serializers are filed under); a single-type topic: <topic>-value
        assert lines == [["ok", "loans.events-value"], ["ok", "loans.events-loans.LoanRequested"],
                         ["ok", "loans.events-loans.LoanApproved"], ["ok", "loans.events-streams.common.TimerFired"],
                         ["ok", "loans.results-value"]]
        union = orjson.loads(RegistryClient(registry.url).version("loans.events-value").schema)
        assert [branch["name"] for branch in union] == ["loans.LoanRequested", "loans.LoanApproved",
                                                         "streams.common.TimerFired"]
    assert main(["schemas", "check", "--topology", str(topology), "--dir", str(tmp_path)]) == 2
    assert "--dir: not allowed with argument --topology" in capsys.readouterr().err


def test_a_worker_refuses_to_start_naming_each_record_its_contracts_lack(tmp_path: Path) -> None:
    """An event it handles or a record it emits without a schema: one line naming each, before any Kafka."""
    topology = write_loan_project(tmp_path, "loans")
    schemas = topology.parent / "schemas"
    (schemas / "LoanDecided.avsc").unlink()
    (schemas / "LoanApproved.avsc").unlink()
    (schemas / "subjects.yaml").write_text(
        "topics:\n  loans.events: [loans.LoanRequested, streams.common.TimerFired]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", "streams", "worker", "--topology", str(topology),
                          "--bootstrap", "127.0.0.1:1"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "no schema" in lines[0]
    assert "LoanApproved (an event it handles)" in lines[0]
    assert "LoanDecided (a record it emits" in lines[0]
    assert "LoanRequested" not in lines[0]
