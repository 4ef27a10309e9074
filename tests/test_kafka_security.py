"""The engine on a Kafka that enforces security: SASL/SCRAM-SHA-512 over TLS and mutual TLS, ACLs enforced.

Each processor of the order saga runs as its own principal, granted exactly the ACLs `streams acls` prints for
it and nothing else (``allow.everyone.if.no.acl.found=false``). The schema registry and this test's own
producer and reader run as ``admin``, the cluster's super user. A worker missing one printed ACL fails with a
one-line authorization error, so the printed set is enforced and each part of it needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from streams.cli import main
from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.acls import create_acls
from streams.kafka.admin import Admin
from streams.kafka.apache import ApacheKafka
from streams.kafka.apache_security import MTLS, SASL_SSL, Security
from streams.kafka.client import plain_producer, read_to_end
from streams.lab.loadgen import place_orders
from streams.ops.acls import GROUP, TOPIC, Grant, kafka_acls_commands, worker_grants
from streams.processors.avro import make_serde
from streams.records import H_EVENT_ID
from streams.registry import RegistryServer
from streams.topology import load
from support import counter_topology, orders_topology, wait_until

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
PROCESSORS = ("orchestrator", "payment", "inventory", "shipping")
TOPOLOGY = orders_topology(2, {"payment_timeout_ms": 8000})


@dataclass
class Secured:
    cluster: ApacheKafka
    admin: KafkaSettings  # the super user's settings: the registry, the test's producer and reader
    serde: Serde
    topology: Path
    tmp: Path
    base_env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # by log name
    saga: dict[str, str] = field(default_factory=dict)  # processor -> log name of its running worker

    def env(self, user: str) -> dict[str, str]:
        return {**self.base_env, **self.cluster.client_env(user)}

    def printed_grants(self, user: str, processor: str, topology: Path | None = None) -> list[Grant]:
        """The grants `streams acls` prints for the processor, checked line for line against the data."""
        topo = load(topology or self.topology)
        grants = worker_grants(topo, topo.processor(processor))
        buf = _capture(["acls", "--topology", str(topology or self.topology), "--processor", processor,
                        "--principal", user, "--bootstrap-server", self.cluster.bootstrap])
        assert buf.splitlines()[1:] == kafka_acls_commands(grants, f"User:{user}", self.cluster.bootstrap)
        return grants

    def start(self, user: str, args: list[str], topology: Path | None = None,
              log: str | None = None) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{log or user}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams", *args, "--topology", str(topology or self.topology),
                 "--state-dir", str(self.tmp / f"state-{log or user}"), "--commit-interval-ms", "50"],
                env=self.env(user), stdout=out, stderr=subprocess.STDOUT)
        self.procs[log or user] = proc
        return proc

    def results(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for m in read_to_end(self.admin, "orders.results"):
            name, _body = self.serde.decode(m.value())
            out[(m.key() or b"").decode()] = name.rsplit(".", 1)[-1]
        return out


def _capture(argv: list[str]) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


@contextlib.contextmanager
def secured_saga(tmp: Path, mode: str) -> Iterator[Secured]:
    """A secured single node and a registry on it, the saga's topics made by admin, each processor's principal
    granted what `streams acls` prints for it, and the saga's workers running as those principals."""
    security = Security.of(mode, *PROCESSORS, "partial", "groupless", "eos")
    with ApacheKafka(tmp / "kafka", security=security) as cluster:
        admin = KafkaSettings.from_env(cluster.bootstrap, env={**cluster.client_env(), "STREAMS_BROKER": "kafka"})
        with RegistryServer(admin, port=0) as registry:
            topo = tmp / "orders.yaml"
            topo.write_text(TOPOLOGY)
            Admin(admin).ensure(load(topo).all_topics())
            base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SCHEMA_REGISTRY"))}
            base.update({**admin.child_env(), "SCHEMA_REGISTRY_URL": registry.url, "PYTHONPATH": str(ROOT)})
            os.environ["SCHEMA_REGISTRY_URL"] = registry.url  # this process's own serde
            s = Secured(cluster, admin, make_serde({}), topo, tmp, base)
            try:
                for user in PROCESSORS:
                    create_acls(admin, s.printed_grants(user, user), f"User:{user}")
                for svc in PROCESSORS[1:]:
                    s.start(svc, ["service", svc])
                s.start("orchestrator", ["worker", "--processor", "orchestrator"])
                s.saga = {u: u for u in PROCESSORS}
                yield s
            finally:
                os.environ.pop("SCHEMA_REGISTRY_URL", None)
                for p in s.procs.values():
                    if p.poll() is None:
                        p.terminate()
                for p in s.procs.values():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(30)


def _saga_completes(s: Secured, n: int, start: int = 0) -> None:
    ids = [f"sec-{i:04d}" for i in range(start, start + n)]
    place_orders(s.admin, s.serde, ids)

    def done() -> bool:
        dead = [log for log in s.saga.values() if s.procs[log].poll() is not None]
        assert not dead, f"a worker exited: {dead}; see {s.tmp}/*.log"
        return len(s.results().keys() & set(ids)) == n

    wait_until(done, 120, f"{n} orders to end over {s.cluster.security.mode if s.cluster.security else '?'}", 1.0)
    results = s.results()
    assert {results[i] for i in ids} == {"OrderCompleted"}


@pytest.fixture(scope="module")
def sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with secured_saga(tmp_path_factory.mktemp("sasl"), SASL_SSL) as s:
        yield s


def test_saga_completes_over_sasl_ssl_with_only_the_printed_acls(sasl: Secured) -> None:
    _saga_completes(sasl, 100)
    # A replacement payment worker with no local state restores its ledger from the changelog with the same
    # grants (the restore consumer's reads and group lookup included), then serves the next orders.
    old = sasl.procs["payment"]
    old.terminate()
    assert old.wait(30) == 0
    sasl.start("payment", ["service", "payment"], log="payment-restored")
    sasl.saga["payment"] = "payment-restored"
    _saga_completes(sasl, 20, start=100)
    log = (sasl.tmp / "payment-restored.log").read_text()
    restored = [int(m) for m in re.findall(r"restore orders-payments-changelog\[\d+\]: done, (\d+) applied", log)]
    assert restored and sum(restored) >= 100, log
    assert "authoriz" not in log.lower(), log


def test_a_worker_missing_one_printed_acl_fails_with_one_authorization_line(sasl: Secured) -> None:
    """`partial` gets every ACL printed for a counter worker but Create on its output topic, which does not
    exist yet: the worker must stop at start with one line naming the refusal, not retry or run half-way."""
    topo = counter_topology(sasl.tmp, "secneg")
    withheld = Grant(TOPIC, "secneg.out", "Create")
    grants = sasl.printed_grants("partial", "counter", topo)
    assert withheld in grants
    create_acls(sasl.admin, [g for g in grants if g != withheld], "User:partial")
    proc = sasl.start("partial", ["worker"], topo, log="partial-denied")
    proc.wait(90)
    lines = (sasl.tmp / "partial-denied.log").read_text().strip().splitlines()
    assert proc.returncode == 2, lines  # not retryable: unchanged, it fails again (streams.cli.exit_code)
    assert lines[-1].startswith("streams: ") and "secneg.out" in lines[-1] \
        and "TOPIC_AUTHORIZATION_FAILED" in lines[-1], lines[-1]
    assert not any("Traceback" in line for line in lines)
    # The same worker with the withheld grant added goes past that point: the grant was the only thing missing.
    create_acls(sasl.admin, [withheld], "User:partial")
    ok = sasl.start("partial", ["worker"], topo, log="partial-granted")
    wait_until(lambda: "secneg.out" in Admin(sasl.admin).list_topics(), 60, "the worker to create its topic")
    assert ok.poll() is None


def test_a_worker_refused_its_group_stops_with_one_line_instead_of_logging_forever(sasl: Secured) -> None:
    """Without Read on its group every poll is refused: the worker exits 2 naming the group and the refusal."""
    topo = counter_topology(sasl.tmp, "secgrp", kafka=sasl.admin)
    withheld = Grant(GROUP, "secgrp-counter", "Read")
    grants = sasl.printed_grants("groupless", "counter", topo)
    assert withheld in grants
    create_acls(sasl.admin, [g for g in grants if g != withheld], "User:groupless")
    proc = sasl.start("groupless", ["worker"], topo)
    proc.wait(90)
    lines = (sasl.tmp / "groupless.log").read_text().strip().splitlines()
    assert proc.returncode == 2, lines
    assert "group secgrp-counter" in lines[-1] and "GROUP_AUTHORIZATION_FAILED" in lines[-1], lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_exactly_once_runs_with_the_printed_transactional_grants(sasl: Secured) -> None:
    """exactly_once adds the transactional-id and IdempotentWrite grants: with them (and nothing else) the
    worker's transactions commit, so a read_committed reader sees one output per input."""
    topo = counter_topology(sasl.tmp, "seceos", partitions=2, kafka=sasl.admin)
    grants = worker_grants(load(topo), load(topo).processor("counter"), exactly_once=True)
    out = _capture(["acls", "--topology", str(topo), "--principal", "eos", "--processing-guarantee",
                    "exactly_once", "--bootstrap-server", sasl.cluster.bootstrap])
    assert out.splitlines()[1:] == kafka_acls_commands(grants, "User:eos", sasl.cluster.bootstrap)
    assert "--transactional-id seceos-counter --resource-pattern-type prefixed" in out
    create_acls(sasl.admin, grants, "User:eos")
    worker = sasl.start("eos", ["worker", "--processing-guarantee", "exactly_once"], topo)
    producer = plain_producer(sasl.admin.common())
    for i in range(50):
        producer.produce("seceos.in", orjson.dumps({"amount": 1}), f"k{i % 5}".encode(),
                         headers=[(H_EVENT_ID, f"ev-{i}".encode())])
    assert producer.flush(30) == 0
    committed = KafkaSettings(sasl.admin.bootstrap_servers,
                              client={**sasl.admin.client, "isolation.level": "read_committed"})

    def outputs() -> list[dict[str, object]]:
        assert worker.poll() is None, (sasl.tmp / "eos.log").read_text()
        return [orjson.loads(m.value()) for m in read_to_end(committed, "seceos.out")]

    wait_until(lambda: len(outputs()) >= 50, 60, "50 committed outputs")
    final = {str(o["key"]): int(str(o["count"])) for o in outputs()}
    assert len(outputs()) == 50 and final == {f"k{k}": 10 for k in range(5)}


def test_saga_completes_over_mutual_tls(tmp_path: Path) -> None:
    with secured_saga(tmp_path, MTLS) as s:
        _saga_completes(s, 20)
