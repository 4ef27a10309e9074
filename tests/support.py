"""Helpers for tests that run real workers against a real broker."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.config import KafkaSettings
from streams.kafka.client import until_settled
from streams.records import H_EVENT_ID


@contextlib.contextmanager
def private_broker(tmp: Path, port: int | None = None) -> Iterator[KafkaSettings]:
    """A broker of the test's own (its topic names are fixed, or it must be down first): the session's kind,
    a real Kafka node unless the session runs on the embedded broker (STREAMS_TEST_BROKER=tansu)."""
    with signalled_broker(tmp, port) as (settings, _signal):
        yield settings


@contextlib.contextmanager
def signalled_broker(tmp: Path, port: int | None = None
                     ) -> Iterator[tuple[KafkaSettings, Callable[[signal.Signals], None]]]:
    """:func:`private_broker`, and a way to signal its process (SIGSTOP and SIGCONT pause the broker)."""
    from streams.kafka.apache import ApacheKafka
    from streams.kafka.embedded import EmbeddedBroker

    if os.environ.get("STREAMS_TEST_BROKER") == "tansu":
        with EmbeddedBroker(port=port, log_path=tmp / "broker.log") as broker:
            yield broker.settings(env={}), lambda sig: os.killpg(broker.pid, sig)
    else:
        with ApacheKafka(tmp / "kafka", port=port) as cluster:
            node = cluster.nodes()[0].id
            yield KafkaSettings.from_env(cluster.bootstrap, env={}), lambda sig: cluster.signal_node(node, sig)


@contextlib.contextmanager
def saga_cluster(tmp: Path, topology: str) -> Iterator[tuple[KafkaSettings, str, Path, dict[str, str]]]:
    """A private broker and schema registry for the order saga, whose topic names its workflow fixes, with its
    topics created: yields (kafka, registry URL, topology file, environment for `streams` subprocesses)."""
    from streams.kafka.admin import Admin
    from streams.registry import RegistryServer
    from streams.topology import load

    with private_broker(tmp) as kafka, RegistryServer(kafka, port=0) as registry:
        topo = tmp / "orders.yaml"
        topo.write_text(topology)
        Admin(kafka).ensure(load(topo).all_topics())
        env = {**os.environ, **kafka.child_env(), "SCHEMA_REGISTRY_URL": registry.url,
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        os.environ["SCHEMA_REGISTRY_URL"] = registry.url  # for this process's own serdes
        try:
            yield kafka, registry.url, topo, env
        finally:
            os.environ.pop("SCHEMA_REGISTRY_URL", None)


def counter_topology(tmp: Path, name: str, partitions: int = 4, options: str = "",
                     kafka: KafkaSettings | None = None) -> Path:
    """A counter topology file; with `kafka`, its topics are created too (before any producer auto-creates)."""
    path = tmp / f"{name}.yaml"
    path.write_text(f"""
name: {name}
topics:
  {name}.in: {{partitions: {partitions}}}
  {name}.out: {{partitions: {partitions}}}
processors:
  counter:
    processor: counter
    inputs: [{name}.in]
    outputs: [{name}.out]
    {options}
""")
    if kafka is not None:
        from streams.kafka.admin import Admin
        from streams.topology import load

        Admin(kafka).ensure(load(path).all_topics())
    return path


_SAGA_TOPICS = ("orders.events", "orders.results", "payments.commands", "inventory.commands", "shipping.commands")
_SERVICES = {"payment": ("payment-service", "payments.commands", "payments"),
             "inventory": ("inventory-service", "inventory.commands", "inventory"),
             "shipping": ("shipping-service", "shipping.commands", "shipping")}


def orders_topology(partitions: int, params: Mapping[str, object], services: bool = True) -> str:
    """The order saga's topology text (the shape of streams/examples/orders/topology.yaml) with a test's partition
    count and workflow parameters, and the three reference services unless ``services`` is False."""
    topics = "".join(f"  {t}: {{partitions: {partitions}}}\n" for t in _SAGA_TOPICS)
    svc = "".join(f"  {name}: {{processor: {proc}, inputs: [{topic}], outputs: [orders.events], store: {store}}}\n"
                  for name, (proc, topic, store) in _SERVICES.items()) if services else ""
    return (f"name: orders\ntopics:\n{topics}processors:\n"
            "  orchestrator:\n    processor: workflow\n    inputs: [orders.events]\n"
            "    outputs: [payments.commands, inventory.commands, shipping.commands, orders.results, orders.events]\n"
            "    store: orders\n    options:\n      workflow: orders\n"
            f"      params: {orjson.dumps(dict(params)).decode()}\n{svc}dlq_topic: orders.dlq\n")


def produce_counts(kafka: KafkaSettings, topic: str, n: int, keys: int, start: int = 0,
                   with_ids: bool = True) -> dict[str, tuple[int, int]]:
    """Produce n records over `keys` keys; returns the expected (count, total) per key."""
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 20,
                  "partitioner": "murmur2_random"})
    expected: dict[str, tuple[int, int]] = {}
    for i in range(start, start + n):
        key = f"k{i % keys}"
        amount = i % 97 + 1
        headers = [(H_EVENT_ID, f"ev-{i}".encode())] if with_ids else None
        p.produce(topic, orjson.dumps({"amount": amount}), key.encode(), headers=headers)
        c, t = expected.get(key, (0, 0))
        expected[key] = (c + 1, t + amount)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return expected


def end_offsets(kafka: KafkaSettings, topic: str, partitions: int) -> dict[int, int]:
    """Log end per partition from a fetch (the embedded broker's ListOffsets is wrong for batches)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "end-offsets-probe",
                  "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        ends: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(ends) < partitions and time.monotonic() < deadline:
            for m in c.consume(10000, 0.5):
                err = m.error()
                if err is not None and err.code() == -191:  # _PARTITION_EOF
                    ends[m.partition()] = m.offset()
        assert len(ends) == partitions, f"no EOF for some partitions of {topic}: {ends}"
        return ends
    finally:
        c.close()


@functools.cache
def adopter_schemas() -> ModuleType:
    """docs/examples/adopt_schemas.py: an adopting team's own copies of the saga's contracts, loaded as the
    examples run it (a file beside the docs, not a package)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "adopt_schemas.py"
    spec = importlib.util.spec_from_file_location("adopt_schemas", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets. A broker that has just started answers NOT_COORDINATOR (or "load in
    progress") while it loads the offsets topic: retried for up to 30 s at the Kafka boundary, as the engine does."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group, **kafka.consumer_defaults()})
    try:
        tps = until_settled(lambda: c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10),
                            time.monotonic() + 30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def run_ok(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; anything but exit 0 fails the test with the end of its output."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def wait_drained(kafka: KafkaSettings, group: str, topic: str, partitions: int, timeout_s: float = 120) -> None:
    """Until the group's committed offsets equal the current log end (re-read each time: workers may still be
    writing to their own input, e.g. timers firing)."""
    def drained() -> bool:
        ends = end_offsets(kafka, topic, partitions)
        # A partition that never had a record has nothing committed (negative): count that as offset 0.
        return {p: max(o, 0) for p, o in committed(kafka, group, topic, partitions).items()} == ends

    wait_until(drained, timeout_s, f"group {group} to commit the log end of {topic}")


Row = tuple[int, int, bytes, bytes | None, list[tuple[str, bytes]]]  # partition, offset, key, value, headers


def read_rows(kafka: KafkaSettings, topic: str, partitions: int) -> list[Row]:
    """Every record of ``topic`` up to its current end, with its partition and offset."""
    ends = end_offsets(kafka, topic, partitions)
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "read-all-probe",
                  "enable.auto.commit": False})
    rows: list[Row] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        pos = dict.fromkeys(range(partitions), 0)
        deadline = time.monotonic() + 60
        while any(pos[p] < ends[p] for p in pos) and time.monotonic() < deadline:
            for m in c.consume(10000, 0.5):
                if m.error() is None:
                    rows.append((m.partition(), m.offset(), m.key() or b"", m.value(), m.headers() or []))
                    pos[m.partition()] = m.offset() + 1
        return rows
    finally:
        c.close()


def read_all(kafka: KafkaSettings, topic: str, partitions: int) -> list[tuple[bytes | None, bytes | None,
                                                                             list[tuple[str, bytes]]]]:
    """Every record of ``topic`` as (key, value, headers); a record without a key reads as key None."""
    return [(key or None, value, headers) for _p, _o, key, value, headers in read_rows(kafka, topic, partitions)]


LIVE: list[WorkerProc] = []  # killed after each test by conftest, so a failing test leaves no workers behind


class WorkerProc:
    """A `streams worker` subprocess with its own state directory and a log file."""

    def __init__(self, topology: Path, state_dir: Path, env: dict[str, str], log: Path,
                 extra: Iterable[str] = (), fault: tuple[str, int] | None = None) -> None:
        env = dict(env)
        if fault is not None:
            env["STREAMS_FAULT_POINT"], env["STREAMS_FAULT_AFTER"] = fault[0], str(fault[1])
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--topology", str(topology), "--state-dir", str(state_dir),
             "--commit-interval-ms", "50", *extra],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        LIVE.append(self)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def hang_up(url: str, partial_request: bytes, times: int = 3) -> None:
    """Send the start of a request to an HTTP server, then reset the connection, as a killed client does."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    for _ in range(times):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(partial_request)
        time.sleep(0.05)  # the handler is now waiting for the rest
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # with linger 0 this is a reset, as when the process dies
    time.sleep(0.3)


@contextlib.contextmanager
def browser_page(chromium: str, width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A page in headless Chromium (Debian's, at ``chromium``) driven by playwright, whose own browser download
    is never used: nothing outside is reachable."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


# What the page shows, read from the live DOM: element ids, the body's attributes, and every table row as
# (its attributes, its cells' text by cell class, plus "<class>@seconds" for a cell's data-seconds).
_DOM = """() => {
  const attrs = e => Object.fromEntries([...e.attributes].map(a => [a.name, a.value]));
  return {
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    body: attrs(document.body),
    rows: [...document.querySelectorAll('tr')].map(tr => [attrs(tr), Object.fromEntries(
      [...tr.querySelectorAll('td')].flatMap(td => [...td.classList].flatMap(c => [[c, td.textContent.trim()],
        ...(td.hasAttribute('data-seconds') ? [[c + '@seconds', td.getAttribute('data-seconds')]] : [])])))]),
  };
}"""


class Dom:
    """A snapshot of the page's DOM (see ``_DOM``) and its HTML."""

    def __init__(self, page: Any) -> None:
        snap = page.evaluate(_DOM)
        self.ids: set[str] = set(snap["ids"])
        self.body: dict[str, str] = snap["body"]
        self.rows: list[tuple[dict[str, str], dict[str, str]]] = [(a, c) for a, c in snap["rows"]]
        self.html: str = page.content()

    def of(self, cls: str) -> list[tuple[dict[str, str], dict[str, str]]]:
        return [(a, c) for a, c in self.rows if cls in a.get("class", "").split()]


# A user's own workflow project, as someone who pip-installed streams would write it: a package with a factory,
# its Avro contracts and a topology naming the workflow by reference (``loanflow.flows:loan``).
LOAN_FLOW = '''
from streams.workflow import WorkflowBuilder, data_fields, emit, record, set_timer


def loan(*, prefix: str = "loans", review_ms: int = 60_000):
    """A loan request waits for approval; without one within review_ms it expires."""
    results = f"{prefix}.results"
    wf = WorkflowBuilder("loans", input_topic=f"{prefix}.events", initial="new", description="loan review")
    wf.states("new", "review")
    wf.terminal("approved", on_enter=[emit("LoanDecided", results, data_fields("loan_id", decision="approved"))])
    wf.terminal("expired", on_enter=[emit("LoanDecided", results, data_fields("loan_id", decision="expired"))])
    wf.events("LoanRequested", "LoanApproved")
    wf.on("LoanRequested", "new", "review",
          do=[record("loan_id", "amount"), set_timer("review", review_ms, fires="ReviewExpired")])
    wf.on("LoanApproved", "review", "approved")
    wf.on("ReviewExpired", "review", "expired")
    return wf.build()


def not_a_factory(**params):
    return "a string"


def raises(**params):
    raise ValueError("no loans on Sundays")
'''


def write_workflow_project(root: Path, name: str, package: str, flows: str, records: Mapping[str, Mapping[str, str]],
                           topics: Mapping[str, Iterable[str]], processor: str, factory: str,
                           params: Mapping[str, object], outputs: Iterable[str]) -> Path:
    """A user's workflow package ``package`` under ``root`` (topology ``name``), laid out as ``streams init``
    does: ``flows.py`` (source ``flows``), one Avro record per entry of ``records`` (namespace ``package``
    minus "flow", plus "s"; the engine's envelope first), ``schemas/subjects.yaml`` mapping ``topics`` (2
    partitions each; the first is the input) to their records, and a topology naming ``package.flows:factory``.
    Returns the topology file."""
    pkg = root / package
    (pkg / "schemas").mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "flows.py").write_text(flows)
    namespace = package.removesuffix("flow") + "s"
    env = {"name": "envelope", "type": "streams.common.Envelope"}
    for name, fields in records.items():
        (pkg / "schemas" / f"{name}.avsc").write_text(orjson.dumps({
            "type": "record", "name": name, "namespace": namespace,
            "fields": [env, *({"name": n, "type": t} for n, t in fields.items())]}).decode())
    (pkg / "schemas" / "subjects.yaml").write_text("topics:\n" + "".join(
        f"  {topic}: [{', '.join(names)}]\n" for topic, names in topics.items()))
    topology = pkg / "topology.yaml"
    topic_lines = "".join(f"  {t}: {{partitions: 2}}\n" for t in topics)
    flow_params = ", ".join(f"{k}: {v}" for k, v in params.items())  # YAML flow style, as a person writes it
    topology.write_text(f"""name: {name}
schemas: schemas
topics:
{topic_lines}processors:
  {processor}:
    processor: workflow
    inputs: [{next(iter(topics))}]
    outputs: [{', '.join(outputs)}]
    options:
      workflow: "{package}.flows:{factory}"
      params: {{{flow_params}}}
""")
    return topology


def write_loan_project(root: Path, prefix: str, review_ms: int = 60_000) -> Path:
    """Package ``loanflow`` under ``root`` (flows, schemas, topology); returns its topology file. Its contracts
    are its own events only: the engine's records (envelope, TimerFired) and its generic state record come with
    streams."""
    return write_workflow_project(
        root, prefix, "loanflow", LOAN_FLOW,
        {"LoanRequested": {"loan_id": "string", "amount": "long"}, "LoanApproved": {"loan_id": "string"},
         "LoanDecided": {"loan_id": "string", "decision": "string"}},
        {f"{prefix}.events": ["loans.LoanRequested", "loans.LoanApproved", "streams.common.TimerFired"],
         f"{prefix}.results": ["loans.LoanDecided"]},
        "loans", "loan", {"prefix": prefix, "review_ms": review_ms}, [f"{prefix}.results", f"{prefix}.events"])


def request_loans(kafka: KafkaSettings, serde: Any, prefix: str) -> None:
    """Two loan requests; only the first is approved, so the second must expire on its review timer."""
    from streams.processors.avro import envelope

    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    now = int(time.time() * 1000)
    for i, (record, key, fields) in enumerate([
        ("loans.LoanRequested", "L1", {"amount": 500}),
        ("loans.LoanApproved", "L1", {}),
        ("loans.LoanRequested", "L2", {"amount": 900}),
    ]):
        event_id = f"ev-{i}"
        body = {"loan_id": key, **fields, "envelope": envelope(event_id, key, record, now, None)}
        producer.produce(f"{prefix}.events", serde.encode(f"{prefix}.events", record, body), key.encode(),
                         headers=[(H_EVENT_ID, event_id.encode())])
    assert producer.flush(30) == 0


def loans_decided(kafka: KafkaSettings, serde: Any, prefix: str, timeout_s: float = 90) -> dict[str, str]:
    """loan id -> decision, once both loans are decided (or what was decided when the wait timed out)."""
    def decided() -> dict[str, str]:
        out = {}
        for _key, value, _headers in read_all(kafka, f"{prefix}.results", 2):
            name, rec = serde.decode(value)
            assert name == "loans.LoanDecided"
            out[rec["loan_id"]] = rec["decision"]
        return out

    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(decided()) == 2, timeout_s, "both loans decided")
    return decided()
