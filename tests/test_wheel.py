"""streams as a library: ``python -m build`` (sdist, then the wheel from it), installed into a fresh virtualenv
outside the repository and used from a directory outside it, as a user would.

Cost: one build per session (~1.5 min: the isolated build environment, then mypyc and the C codec) and one
``pip install`` into a new venv (~15 s with pip's cache; PyPI otherwise). Then a few CLI calls, and one worker
of the installed package running a user's workflow on the broker (~10 s). The build and the venv are conftest.py's
session fixtures, shared with test_init.py.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.kafka.admin import Admin
from streams.registry import RegistryServer
from streams.topology import load
from support import loans_decided, request_loans, run_ok, write_loan_project


def test_build_makes_an_sdist_and_a_compiled_wheel_with_the_examples(dist: Path, wheel: Path) -> None:
    (sdist,) = dist.glob("streams-*.tar.gz")
    assert sdist.stat().st_size > 0
    assert "-cp311-" in wheel.name or f"-cp{sys.version_info.major}{sys.version_info.minor}-" in wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "streams/_native.json" in names, "the wheel's build writes the manifest of the sources it ships"
    assert any(n.startswith("streams/hotpath__mypyc") for n in names)
    assert any(n.startswith("streams/contracts/_avroc.") and n.endswith(".so") for n in names)
    for data in ("streams/examples/orders/topology.yaml", "streams/examples/counter/topology.yaml",
                 "streams/examples/orders/schemas/subjects.yaml",
                 "streams/examples/orders/schemas/orders/LineItem.avsc",
                 "streams/examples/orders/tests/test_workflow.py",
                 "streams/examples/loan/topology.yaml", "streams/examples/loan/schemas/subjects.yaml",
                 "streams/examples/loan/schemas/loan/commands/ReleaseCreditHold.avsc",
                 "streams/contracts/common/TimerFired.avsc", "streams/contracts/common/WorkflowState.avsc",
                 "streams/contracts/avroc.h"):
        assert data in names, f"{data} missing from the wheel"
    assert not any(n.startswith(("schemas/", "topology/", "tests/")) for n in names)


def test_the_installed_package_runs_compiled_from_outside_the_checkout(
        venv: Path, outside: tuple[Path, dict[str, str]]) -> None:
    cwd, env = outside
    assert "Usage: streams" in run_ok([str(venv / "streams"), "--help"], cwd, env).stdout
    listed = run_ok([str(venv / "streams"), "workflow", "list"], cwd, env).stdout
    assert [line.split("\t")[:2] for line in listed.splitlines() if not line.startswith("\t")] == [
        ["loan", "input=loan.events"], ["orders", "input=orders.events"]]
    probe = (
        "import streams, streams._native as n, streams.runtime.worker as w, streams.contracts._avroc as c\n"
        "from streams.topology import load\n"
        "from streams.contracts import Catalogue\n"
        "t = load('orders')\n"
        "print(n.status()); print(streams.__file__); print(w.__file__); print(c.__file__); print(t.schemas)\n"
        "print(len(Catalogue.load(t.schemas).messages))\n"
    )
    status, package, worker, codec, schemas, messages = run_ok(
        [str(venv / "python"), "-c", probe], cwd, env).stdout.splitlines()
    assert status == "compiled"
    site = Path(package).parent.parent
    assert venv.parent in site.parents, f"streams imported from {package}, not the venv"
    assert worker.endswith(".so") and codec.endswith(".so")
    assert Path(schemas) == site / "streams" / "examples" / "orders" / "schemas"
    assert int(messages) > 10


def test_a_users_workflow_is_named_by_reference_to_the_installed_cli(
        venv: Path, outside: tuple[Path, dict[str, str]]) -> None:
    cwd, env = outside
    write_loan_project(cwd, "loans")
    env = {**env, "PYTHONPATH": str(cwd)}  # the user's own package, not the checkout
    ref = "loanflow.flows:loan"
    streams = str(venv / "streams")
    assert run_ok([streams, "workflow", "list", ref], cwd, env).stdout.startswith(
        f"{ref}\tinput=loans.events\tstates=4\tterminal=approved,expired")
    assert "    review --> expired: ReviewExpired" in run_ok([streams, "workflow", "diagram", ref], cwd, env).stdout
    assert run_ok([streams, "workflow", "validate", ref], cwd, env).stdout.startswith(f"{ref}: valid")
    bad = subprocess.run([streams, "workflow", "validate", "loanflow.flows:nope"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("streams: WorkflowDefinitionError: workflow 'loanflow.flows:nope': "
                                  "module 'loanflow.flows' has no attribute 'nope'")


@pytest.mark.kafka
def test_the_installed_worker_runs_a_users_workflow_named_in_its_topology(
        venv: Path, outside: tuple[Path, dict[str, str]], kafka: KafkaSettings, unique: str) -> None:
    cwd, env = outside
    prefix = f"wheel-loans-{unique}"
    topology = write_loan_project(cwd, prefix, review_ms=1500)
    Admin(kafka).ensure(load(topology).all_topics())
    with RegistryServer(port=0) as registry:
        env = {**env, "PYTHONPATH": str(cwd), "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
               "SCHEMA_REGISTRY_URL": registry.url,
               "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "6000"}  # Apache Kafka's default minimum
        with open(cwd / "worker.log", "wb") as log:
            worker = subprocess.Popen([str(venv / "streams"), "worker", "--topology", str(topology),
                                       "--state-dir", str(cwd / "state"), "--commit-interval-ms", "50"],
                                      cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                serde = Serde(RegistryClient(registry.url), Catalogue.load(topology.parent / "schemas"))
                request_loans(kafka, serde, prefix)
                decided = loans_decided(kafka, serde, prefix)
            finally:
                worker.terminate()
                worker.wait(30)
    text = (cwd / "worker.log").read_text()
    assert decided == {"L1": "approved", "L2": "expired"}, text[-3000:]
    assert "hot path compiled" in text and "Traceback" not in text
