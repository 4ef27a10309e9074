"""The HTTP edge of the three servers (registry, worker status, dashboard), on the real broker.

A real fuzzer (schemathesis) drives each server from its own /openapi.json: no 500, no hang, no traceback,
every 4xx a JSON error naming what was wrong. Then the registry's access rules from a client on another
address, the bounds on one request's work, and the endpoints topic as an attacker would use it.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from streams.config import KafkaSettings, WorkerSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.contracts.client import RegistrySettings
from streams.errors import ConfigError, SchemaRegistryError, SchemaRegistryUnavailableError
from streams.kafka.admin import Admin
from streams.ops import endpoints as endpoints_module
from streams.ops.dashboard import Dashboard, DashboardSettings
from streams.ops.endpoints import endpoints_topic
from streams.ops.signal import Signaller
from streams.ops.status import Endpoints, StatusServer
from streams.processors import resolve
from streams.processors.avro import default_schemas
from streams.registry import RegistryServer
from streams.runtime.worker import Worker, WorkerSpec
from streams.topology import TopicSpec, load
from support import counter_topology, produce_counts, read_all

pytestmark = pytest.mark.kafka

FUZZ = settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
TOKEN = "s3cret-token-for-tests"


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


JSON = {"Content-Type": "application/json"}


# ------------------------------------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def registry(kafka: KafkaSettings) -> Iterator[RegistryServer]:
    import uuid

    with RegistryServer(kafka, topic=f"_schemas-http-{uuid.uuid4().hex[:8]}") as server:
        yield server


@dataclass
class _Workflow:
    """What a signal needs of a workflow: its input topic, the events it handles and its (real) serde."""

    input_topic: str
    serde: Serde
    handled_events: frozenset[str]


@pytest.fixture(scope="module")
def worker_server(kafka: KafkaSettings, registry: RegistryServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatusServer]:
    """A running counter worker with a few entities, and its status server (no token: loopback) that also
    takes signals into an orders workflow's input topic."""
    import uuid

    tmp = tmp_path_factory.mktemp("worker")
    name = f"http{uuid.uuid4().hex[:8]}"
    topo_path = counter_topology(tmp, name, 2, kafka=kafka)
    Admin(kafka).ensure([TopicSpec(f"{name}.orders", 1, 1)])
    produce_counts(kafka, f"{name}.in", 20, 5)
    worker, thread = _start_worker(kafka, topo_path, tmp / "state")
    serde = Serde(RegistryClient(registry.url), Catalogue.load(default_schemas()))
    target = _Workflow(f"{name}.orders", serde, frozenset({"PaymentCompleted"}))
    server = StatusServer(worker, None, 2, signaller=Signaller(kafka, target)).start()
    try:
        deadline = time.monotonic() + 60
        while not worker.scan(None, 1, lambda raw: True) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
        worker.stop()
        thread.join(30)


def _start_worker(kafka: KafkaSettings, topo_path: Path, state_dir: Path) -> tuple[Worker, threading.Thread]:
    topo = load(topo_path)
    proc = topo.processor(None)
    settings_ = WorkerSettings(group=topo.default_group(proc), state_dir=state_dir, commit_interval_ms=50)
    worker = Worker(WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic),
                    resolve(proc.processor, proc.options, proc.outputs), kafka, settings_, lambda _m: None)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


@pytest.fixture(scope="module")
def dashboard(kafka: KafkaSettings) -> Iterator[Dashboard]:
    with Dashboard(DashboardSettings(port=0, groups=("http-fuzz-none",), interval_s=0.5), kafka) as dash:
        yield dash


# ------------------------------------------------------------------------------------------------ the fuzzer


def _call(case: Any, caplog: pytest.LogCaptureFixture) -> None:
    """One generated request: answered within the deadline, never 5xx, a 4xx is JSON naming the problem."""
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        response = case.call(timeout=10)
    assert time.monotonic() - started < 10
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, response.text
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body.get("error_code"), int) and body["message"], body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def _fuzz(base: str, caplog: pytest.LogCaptureFixture) -> int:
    """Every operation of the server's OpenAPI document, 25 generated requests each (a fixed seed)."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @FUZZ
        def run(case: Any) -> None:
            _call(case, caplog)

        run()
    return len(operations)


def test_fuzz_registry(registry: RegistryServer, caplog: pytest.LogCaptureFixture) -> None:
    assert _fuzz(registry.url, caplog) == 24  # with /healthz


def test_fuzz_worker_status(worker_server: StatusServer, caplog: pytest.LogCaptureFixture) -> None:
    assert _fuzz(worker_server.url, caplog) == 5


def test_fuzz_dashboard(dashboard: Dashboard, caplog: pytest.LogCaptureFixture) -> None:
    assert _fuzz(dashboard.url.rstrip("/"), caplog) == 4


def test_every_server_publishes_its_operations(registry: RegistryServer, worker_server: StatusServer,
                                               dashboard: Dashboard) -> None:
    for url, path in ((registry.url, "/subjects/{subject}/versions"), (worker_server.url, "/workflows/{key}/events"),
                      (dashboard.url.rstrip("/"), "/api/snapshot")):
        status, doc = request(f"{url}/openapi.json")
        assert status == 200 and doc["openapi"].startswith("3.") and path in doc["paths"], doc


def test_a_signal_over_http(worker_server: StatusServer, kafka: KafkaSettings) -> None:
    url = f"{worker_server.url}/workflows/o-1/events"
    paid = {"order_id": "o-1", "payment_id": "pay-1", "amount_cents": 100}
    status, sent = request(url, "POST", orjson.dumps({"type": "PaymentCompleted", "data": paid, "id": "e-1"}), JSON)
    assert status == 202 and (sent["id"], sent["key"], sent["event"]) == ("e-1", "o-1", "PaymentCompleted"), sent
    [(key, value, _headers)] = read_all(kafka, sent["topic"], 1)
    assert key == b"o-1" and value
    status, err = request(url, "POST", orjson.dumps({"type": "PaymentCompleted", "data": {**paid, "x": 1}}), JSON)
    assert (status, err["field"]) == (400, "x") and "no field" in err["message"], err
    status, err = request(url, "POST", orjson.dumps({"type": "PaymentCompleted", "data": paid}),
                          {"Content-Type": "text/plain"})  # what a page may post cross-origin: refused
    assert status == 415 and "Content-Type" in err["message"]


# ------------------------------------------------------------------------------------------------ access


def _public_ip() -> str:
    """An address of this machine's own interface that is not loopback: a client there is not local."""
    for addr in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split():
        if "." in addr and not addr.startswith("127."):
            return addr
    pytest.skip("this machine has no non-loopback IPv4 address to bind")


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_registry_beyond_loopback_needs_credentials_and_rights(kafka: KafkaSettings, unique: str) -> None:
    ip = _public_ip()
    with pytest.raises(ConfigError, match="needs a bearer token"):
        RegistryServer(host=ip)
    users = {"reader": ("r-pass", "read"), "writer": ("w-pass", "write"), "boss": ("b-pass", "admin")}
    with RegistryServer(kafka, host=ip, topic=f"_schemas-{unique}", token=TOKEN, users=users) as reg:
        url = f"http://{ip}:{reg.url.rsplit(':', 1)[1]}"
        assert reg.url == url
        schema = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]})
        body = json.dumps({"schema": schema}).encode()
        # no credentials from another address: nothing, and above all no admin operation
        assert request(f"{url}/subjects/x", "DELETE")[0] == 401
        status, err = request(f"{url}/config", "PUT", b'{"compatibility":"NONE"}', JSON)
        assert status == 401 and err["error_code"] == 40101 and "credentials" in err["message"]
        assert request(f"{url}/subjects")[0] == 401
        assert request(f"{url}/subjects", headers=_basic("reader", "wrong"))[0] == 401
        # read, write and admin rights are separate
        assert request(f"{url}/subjects", headers=_basic("reader", "r-pass")) == (200, [])
        assert request(f"{url}/subjects/x/versions", "POST", body, {**JSON, **_basic("reader", "r-pass")})[0] == 403
        assert request(f"{url}/subjects/x/versions", "POST", body, {**JSON, **_basic("writer", "w-pass")})[0] == 200
        assert request(f"{url}/subjects/x", "DELETE", headers=_basic("writer", "w-pass"))[0] == 403
        assert request(f"{url}/config", "PUT", b'{"compatibility":"NONE"}',
                       {**JSON, **_basic("boss", "b-pass")}) == (200, {"compatibility": "NONE"})
        assert request(f"{url}/subjects/x", "DELETE", headers={"Authorization": f"Bearer {TOKEN}"}) == (200, [1])
        # confluent-kafka's client as its users configure it, and ours from the environment
        c = SchemaRegistryClient({"url": url, "basic.auth.user.info": "writer:w-pass", "max.retries": 0})
        sid = c.register_schema("y-value", Schema(schema, "AVRO"))
        assert c.get_schema(sid).schema_str == schema.replace(" ", "")
        ours = RegistryClient(RegistrySettings.from_env(url, {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "reader:r-pass"}))
        assert ours.subjects() == ["y-value"]
        with pytest.raises(SchemaRegistryError, match="HTTP 401"):
            RegistryClient(RegistrySettings(url=url)).subjects()
    with RegistryServer(kafka, topic=f"_schemas-{unique}", token=TOKEN) as local:
        assert request(f"{local.url}/subjects") == (200, ["y-value"])
        assert request(f"{local.url}/subjects", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding


def test_our_client_sends_basic_and_bearer_credentials_and_a_wrong_one_is_a_typed_error() -> None:
    # Beyond loopback the registry answers nothing without credentials, so every 200 here proves they were sent.
    ip = _public_ip()
    users = {"writer": ("w-secret-pass", "write"), "reader": ("r-secret-pass", "read")}
    schema = json.dumps({"type": "record", "name": "Auth", "fields": [{"name": "x", "type": "int"}]})
    with RegistryServer(host=ip, token=TOKEN, users=users) as reg:
        url = f"http://{ip}:{reg.url.rsplit(':', 1)[1]}"

        def client(**env: str) -> RegistryClient:
            return RegistryClient(RegistrySettings.from_env(url, env))

        sid = client(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO="writer:w-secret-pass").register("auth-value", schema)
        bearer = client(SCHEMA_REGISTRY_BEARER_AUTH_TOKEN=TOKEN)
        assert bearer.subjects() == ["auth-value"] and bearer.version("auth-value").id == sid
        assert RegistryClient(url.replace("://", "://reader:r-secret-pass@")).versions("auth-value") == [1]
        wrong = [client(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO="writer:wrong-secret-pass"),
                 client(SCHEMA_REGISTRY_BEARER_AUTH_TOKEN="wrong-secret-token"), RegistryClient(url),
                 RegistryClient(url.replace("://", "://reader:wrong-secret@"))]
        for bad in wrong:
            with pytest.raises(SchemaRegistryError) as info:
                bad.versions("auth-value")
            err = info.value
            assert (err.http_status, err.code, err.retryable) == (401, 40101, False), err
            assert f"GET {url}/subjects/auth-value/versions" in str(err) and "secret" not in str(err), err
        with pytest.raises(SchemaRegistryError) as info:  # the right credential, not the right: 403, not retryable
            client(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO="reader:r-secret-pass").register("auth-value", schema + " ")
        assert (info.value.http_status, info.value.retryable) == (403, False) and "secret" not in str(info.value)


def test_a_refused_connection_and_a_5xx_are_retryable_and_retried_with_backoff() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = RegistryClient(RegistrySettings(url=f"http://127.0.0.1:{port}", max_retries=2, retry_wait_ms=10))
    with pytest.raises(SchemaRegistryUnavailableError) as info:
        refused.schema(7)
    assert info.value.retryable and f"GET http://127.0.0.1:{port}/schemas/ids/7" in str(info.value)

    answers = [503, 503, 200]
    seen: list[str] = []

    class Flaky(BaseHTTPRequestHandler):  # a registry failing on its side twice, then answering
        def do_GET(self) -> None:
            seen.append(self.path)
            status = answers.pop(0) if answers else 500
            body = json.dumps(["s-value"] if status == 200 else {"error_code": 50003, "message": "busy"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert RegistryClient(RegistrySettings(url=url, retry_wait_ms=10)).subjects() == ["s-value"]
        assert len(seen) == 3  # confluent's client retried the two 503s
        with pytest.raises(SchemaRegistryUnavailableError) as info:
            RegistryClient(RegistrySettings(url=url, max_retries=1, retry_wait_ms=10)).versions("s-value")
        err = info.value
        assert (err.http_status, err.code, err.retryable) == (500, 50003, True)
        assert f"GET {url}/subjects/s-value/versions: busy" in str(err) and len(seen) == 5
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------------------------------------ bounds


def test_one_request_cannot_stall_the_others(registry: RegistryServer, unique: str) -> None:
    """After an 80,000-symbol enum is registered, a 74-byte schema of one symbol is judged (incompatible)
    within a second, and a concurrent listing is answered within a second too."""
    subject = f"enum-{unique}"
    big = json.dumps({"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(80_000)]})
    assert request(f"{registry.url}/subjects/{subject}/versions", "POST", json.dumps({"schema": big}).encode(),
                   JSON, timeout=60)[0] == 200
    small = json.dumps({"schema": json.dumps({"type": "enum", "name": "E", "symbols": ["S0"]})}).encode()
    for _ in range(3):
        listed: dict[str, float] = {}

        def listing(listed: dict[str, float] = listed) -> None:
            t0 = time.monotonic()
            assert request(f"{registry.url}/subjects")[0] == 200
            listed["s"] = time.monotonic() - t0

        t = threading.Thread(target=listing)
        t0 = time.monotonic()
        t.start()
        status, err = request(f"{registry.url}/subjects/{subject}/versions", "POST", small, JSON)
        took = time.monotonic() - t0
        t.join()
        assert status == 409 and "and 79979 more" in err["message"], err
        assert took < 1.0 and listed["s"] < 1.0, (took, listed)


@pytest.mark.parametrize(("schema", "limit"), [
    ({"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(100_001)]}, "symbols exceeds the limit"),
    ([f"n{i}" for i in range(1_001)], "branches exceeds the limit"),
    ({"type": "record", "name": "R", "fields": [{"name": f"f{i}", "type": "int"} for i in range(10_001)]},
     "fields exceeds the limit"),
    (json.loads('{"type":"array","items":' * 70 + '"int"' + "}" * 70), "nesting depth exceeds the limit of 64"),
])
def test_oversized_schemas_get_422_naming_the_limit(registry: RegistryServer, schema: Any, limit: str) -> None:
    status, err = request(f"{registry.url}/subjects/big/versions", "POST",
                          json.dumps({"schema": json.dumps(schema)}).encode(), JSON)
    assert (status, err["error_code"]) == (422, 42201) and limit in err["message"], err


def test_bodies_over_the_limit_get_413(registry: RegistryServer, worker_server: StatusServer) -> None:
    # The size is declared, not sent: a server answers 413 on the header and closes, and a client still writing
    # a megabyte then fails with a broken pipe before it can read the answer (seen in a full run).
    too_big = {**JSON, "Content-Length": str((1 << 20) + 1)}
    status, err = request(f"{worker_server.url}/workflows/k/events", "POST", b"{}", too_big)
    assert status == 413 and "exceeds" in err["message"]
    status, err = request(f"{registry.url}/subjects/x/versions", "POST", b"{}", {**JSON, "Content-Length": "9" * 11})
    assert status == 413


# ------------------------------------------------------------------------------------------------ endpoints


def _until(get: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 20) -> Any:
    """``get()`` until ``done`` says so (the owners cache and the endpoints read need a moment)."""
    deadline = time.monotonic() + timeout_s
    while not done(answer := get()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return answer


class _Listener:
    """An attacker's HTTP listener: records what it is sent and answers a forged entity."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(dict(self.headers))
                body = b'{"key":"forged","state":"FORGED"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_invalid_announcements_are_remembered_within_a_bound_and_the_topic_compacts_soon(
        kafka: KafkaSettings, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = endpoints_topic(f"bound{unique}")
    assert spec.kafka_config()["cleanup.policy"] == "compact" and int(spec.kafka_config()["segment.ms"]) <= 3600_000
    Admin(kafka).ensure([spec])
    monkeypatch.setattr(endpoints_module, "_REPORTED_MAX", 3)
    producer = Producer(kafka.common())
    for i in range(10):
        producer.produce(spec.name, b"not json %d" % i, b"spam-%d" % i)
    assert producer.flush(10) == 0
    logs: list[str] = []
    reader = Endpoints(kafka, spec.name, TOKEN, log=logs.append)
    assert reader.announced() == {}
    assert sum("ignoring an endpoint announcement" in line for line in logs) == 10
    assert len(reader._reported) <= 3


def test_a_forged_announcement_gets_no_token_and_changes_no_answer(kafka: KafkaSettings, unique: str,
                                                                   tmp_path: Path) -> None:
    topic = f"http{unique}.endpoints"
    Admin(kafka).ensure([TopicSpec(topic, 1, 1, "compact")])
    topo_path = counter_topology(tmp_path, f"http{unique}", 2, kafka=kafka)
    produce_counts(kafka, f"http{unique}.in", 4, 2)
    logs: list[str] = []
    endpoints = Endpoints(kafka, topic, TOKEN, log=logs.append)
    worker, thread = _start_worker(kafka, topo_path, tmp_path / "state")
    server = StatusServer(worker, None, 2, token=TOKEN, endpoints=endpoints).start()
    attacker = _Listener()
    try:
        endpoints.announce("me", server.url, [0, 1])
        producer = Producer(kafka.common())
        producer.produce(topic, orjson.dumps({"url": attacker.url, "partitions": [0, 1], "at": 2**62}), b"evil")
        producer.produce(topic, orjson.dumps({"url": attacker.url, "partitions": [0, 1], "expires": time.time() + 20,
                                              "sig": "0" * 64}), b"evil-signed")
        assert producer.flush(10) == 0
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(3):
            status, body = request(f"{server.url}/workflows/no-such-key", headers=auth)
            assert status == 404 and "on this worker" in body["message"], body
            time.sleep(2.1)  # past the owners cache
        assert attacker.seen == []
        assert sum("ignoring an endpoint announcement" in line for line in logs) == 2, logs  # once each
        # a real member (it holds the key) elsewhere is asked, with the derived read-only credential only
        other = Endpoints(kafka, topic, TOKEN)
        other.announce("other", attacker.url, [0, 1])
        other.close()
        status, body = _until(lambda: request(f"{server.url}/workflows/no-such-key", headers=auth),
                              lambda answer: answer[0] == 200)
        assert (status, body.get("state")) == (200, "FORGED"), (body, logs)
        assert attacker.seen and all(TOKEN not in json.dumps(h) for h in attacker.seen)
        assert attacker.seen[-1]["Authorization"] == f"Bearer {endpoints.forward_token}"
        # that credential reads, and cannot signal
        read = {"Authorization": f"Bearer {endpoints.forward_token}"}
        assert request(f"{server.url}/healthz", headers=read)[0] == 200
        assert request(f"{server.url}/workflows/k/events", "POST", b'{"type":"X"}', {**JSON, **read})[0] == 403
        # an expired lease is not believed, whoever signed it
        expired = Endpoints(kafka, topic, TOKEN, clock=lambda: time.time() - 120)
        expired.announce("other", attacker.url, [0, 1])
        expired.close()
        assert _until(lambda: request(f"{server.url}/workflows/no-such-key", headers=auth),
                      lambda answer: answer[0] == 404)[0] == 404
    finally:
        attacker.httpd.shutdown()
        endpoints.close()
        server.stop()
        worker.stop()
        thread.join(30)


# ------------------------------------------------------------------------------------------------ the layer


def test_a_stalled_client_gets_503_at_the_deadline_and_an_idle_one_is_closed() -> None:
    """The request deadline and the idle keep-alive timeout of streams.web, on uvicorn with short limits."""
    from streams.web import Access, App, Limits, Op, Server

    ops = [Op("POST", "/echo", lambda c: c.body, body={"type": "object"}), Op("GET", "/ok", lambda c: {"ok": True})]
    server = Server(App("t", ops, Access(), limits=Limits(request_s=0.5, keep_alive_s=1)), "127.0.0.1", 0, "t")
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stalled:
            stalled.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"a\":")
            t0 = time.monotonic()
            assert request(f"{server.url()}/ok") == (200, {"ok": True})  # others are not held up meanwhile
            answer = b""
            while b"}" not in answer and (chunk := stalled.recv(65536)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 503") and b"longer than 0.5 s" in answer, answer
            assert time.monotonic() - t0 < 3
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            t0 = time.monotonic()
            assert idle.recv(1) == b""  # closed by the server, not by our timeout
            assert 0.5 < time.monotonic() - t0 < 4
    finally:
        server.stop()
