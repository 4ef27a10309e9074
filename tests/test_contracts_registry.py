"""The schema registry against confluent-kafka's own client, serializer and deserializer, on the real broker."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.client import HTTPConnection
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError as ConfluentRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.errors import ConfigError
from streams.processors.avro import default_schemas
from streams.registry import RegistryServer
from support import hang_up

pytestmark = pytest.mark.kafka


def record(fields: list[dict[str, Any]], name: str = "Order", ns: str = "test") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": ns, "fields": fields})


V1 = record([{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}])
V2_DEFAULT = record([{"name": "id", "type": "string"}, {"name": "amount", "type": "long"},
                     {"name": "channel", "type": "string", "default": "web"}])
V2_REQUIRED = record([{"name": "id", "type": "string"}, {"name": "amount", "type": "long"},
                      {"name": "channel", "type": "string"}])
V1_NO_AMOUNT = record([{"name": "id", "type": "string"}])
AMOUNT_AS_STRING = record([{"name": "id", "type": "string"}, {"name": "amount", "type": "string"}])


@pytest.fixture
def registry(kafka: KafkaSettings, unique: str) -> Iterator[RegistryServer]:
    with RegistryServer(kafka, topic=f"_schemas-{unique}") as server:
        yield server


@pytest.fixture(scope="module")
def shared_registry(kafka: KafkaSettings) -> Iterator[RegistryServer]:
    """One registry for tests that only send requests that change nothing."""
    with RegistryServer(kafka, topic=f"_schemas-{uuid.uuid4().hex[:8]}") as server:
        yield server


def client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url, "max.retries": 0})


def http(url: str, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = HTTPConnection(host, int(port), timeout=10)
    try:
        sent = {"Content-Type": "application/vnd.schemaregistry.v1+json"} if body is not None else {}
        conn.request(method, path, body=body, headers={**sent, **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        assert resp.getheader("Content-Type") == "application/vnd.schemaregistry.v1+json"
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def error_code(call: Any) -> tuple[int, int, str]:
    with pytest.raises(ConfluentRegistryError) as info:
        call()
    return info.value.http_status_code, info.value.error_code, info.value.error_message


def test_confluent_client_covers_every_endpoint(registry: RegistryServer) -> None:
    c = client(registry.url)
    assert c.get_schema_types() == ["AVRO"]

    # register: idempotent; byte-different but canonically equal is the same schema, in any subject
    id1 = c.register_schema("a-value", Schema(V1, "AVRO"))
    assert c.register_schema("a-value", Schema(V1, "AVRO")) == id1
    respelled = json.dumps(json.loads(V1), indent=4, sort_keys=True)
    assert respelled != V1
    assert client(registry.url).register_schema("a-value", Schema(respelled, "AVRO")) == id1
    assert c.get_versions("a-value") == [1]
    assert c.register_schema("b-value", Schema(respelled, "AVRO")) == id1
    id2 = c.register_schema("a-value", Schema(V2_DEFAULT, "AVRO"))
    assert id2 == id1 + 1

    # lookup
    found = c.lookup_schema("a-value", Schema(V2_DEFAULT, "AVRO"))
    assert (found.subject, found.version, found.schema_id) == ("a-value", 2, id2)
    assert error_code(lambda: client(registry.url).lookup_schema("a-value", Schema(V2_REQUIRED, "AVRO")))[:2] \
        == (404, 40403)
    assert error_code(lambda: client(registry.url).lookup_schema("nope", Schema(V1, "AVRO")))[:2] == (404, 40401)

    # subjects, versions, ids
    assert c.get_subjects() == ["a-value", "b-value"]
    assert c.get_versions("a-value") == [1, 2]
    v1 = c.get_version("a-value", 1)
    assert (v1.version, v1.schema_id) == (1, id1)
    assert json.loads(v1.schema.schema_str)["fields"] == json.loads(V1)["fields"]
    latest = client(registry.url).get_latest_version("a-value")
    assert (latest.version, latest.schema_id) == (2, id2)
    assert error_code(lambda: c.get_version("a-value", 99))[:2] == (404, 40402)
    assert error_code(lambda: c.get_versions("nope"))[:2] == (404, 40401)
    assert error_code(lambda: c.get_version("nope", 1))[:2] == (404, 40401)
    by_id = client(registry.url).get_schema(id2).schema_str
    assert by_id == client(registry.url).get_version("a-value", 2).schema.schema_str
    assert error_code(lambda: c.get_schema(9999))[:2] == (404, 40403)
    assert {(v.subject, v.version) for v in c.get_schema_versions(id1)} == {("a-value", 1), ("b-value", 1)}
    assert c.get_subjects_by_schema_id(id1) == ["a-value", "b-value"]
    status, doc = http(registry.url, "GET", "/subjects/a-value/versions/2/schema")
    assert status == 200 and doc["fields"][-1] == {"name": "channel", "type": "string", "default": "web"}
    status, doc = http(registry.url, "GET", "/subjects/a-value/versions/latest")
    assert status == 200 and doc["version"] == 2
    assert error_code(lambda: c.get_version("a-value", 0))[:2] == (422, 42202)

    # config: global and per subject, all levels
    assert c.get_compatibility() == "BACKWARD"
    for level in ("NONE", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"):
        assert c.set_compatibility("b-value", level) == {"compatibility": level}
        assert c.get_compatibility("b-value") == level
    assert c.get_config("b-value").compatibility_level.value == "FULL_TRANSITIVE"
    assert c.delete_config("b-value").compatibility_level.value == "FULL_TRANSITIVE"
    assert error_code(lambda: c.get_compatibility("b-value"))[:2] == (404, 40408)
    status, doc = http(registry.url, "GET", "/config/b-value?defaultToGlobal=true")
    assert (status, doc) == (200, {"compatibilityLevel": "BACKWARD"})
    assert error_code(lambda: c.set_compatibility(level="SIDEWAYS"))[:2] == (422, 42203)
    assert c.set_compatibility(level="full") == {"compatibility": "FULL"}
    assert c.get_compatibility() == "FULL"
    assert c.set_compatibility(level="BACKWARD") == {"compatibility": "BACKWARD"}

    # compatibility tests and a 409 on an incompatible change, naming the field
    assert c.test_compatibility("a-value", Schema(V2_DEFAULT, "AVRO")) is True
    assert c.test_compatibility("a-value", Schema(V2_REQUIRED, "AVRO"), version=1) is False
    assert c.test_compatibility_all_versions("a-value", Schema(V2_REQUIRED, "AVRO")) is True  # BACKWARD: latest only
    status, doc = http(registry.url, "POST", "/compatibility/subjects/a-value/versions/1?verbose=true",
                       json.dumps({"schema": V2_REQUIRED}))
    assert status == 200 and doc["is_compatible"] is False
    assert any("test.Order.channel" in m for m in doc["messages"]), doc
    status, doc = http(registry.url, "POST", "/compatibility/subjects/a-value/versions/latest?verbose=true",
                       json.dumps({"schema": AMOUNT_AS_STRING}))
    assert status == 200 and doc["is_compatible"] is False
    assert doc["messages"] == ["new schema cannot read data written with version 2: field test.Order.amount: "
                               "reader type string cannot read writer type long"]
    status, code, message = error_code(lambda: c.register_schema("a-value", Schema(AMOUNT_AS_STRING, "AVRO")))
    assert (status, code) == (409, 409) and "test.Order.amount" in message
    assert error_code(lambda: c.register_schema("a-value", Schema("{not avro", "AVRO")))[:2] == (422, 42201)
    assert error_code(lambda: c.test_compatibility("nope", Schema(V1, "AVRO"), version=1))[:2] == (404, 40401)

    # deletes: soft, then hard only after soft; listing with ?deleted=true
    assert c.delete_version("a-value", 1) == 1
    assert c.get_versions("a-value") == [2]
    assert c.get_versions("a-value", deleted=True) == [1, 2]
    assert error_code(lambda: c.get_version("a-value", 1))[:2] == (404, 40402)
    assert c.get_version("a-value", 1, deleted=True).schema_id == id1
    assert error_code(lambda: c.delete_version("a-value", 1))[:2] == (404, 40406)
    assert error_code(lambda: c.delete_version("a-value", 2, permanent=True))[:2] == (404, 40407)
    assert c.delete_version("a-value", 1, permanent=True) == 1
    assert c.get_versions("a-value", deleted=True) == [2]
    assert c.get_schema(id1) is not None  # still held by b-value
    assert error_code(lambda: c.delete_subject("b-value", permanent=True))[:2] == (404, 40405)
    assert c.delete_subject("b-value") == [1]
    assert c.get_subjects() == ["a-value"]
    assert c.get_subjects(deleted=True) == ["a-value", "b-value"]
    assert error_code(lambda: c.delete_subject("b-value"))[:2] == (404, 40404)
    assert c.delete_subject("b-value", permanent=True) == [1]
    assert c.get_subjects(deleted=True) == ["a-value"]
    assert error_code(lambda: client(registry.url).get_schema(id1))[:2] == (404, 40403)  # no subject holds it
    assert error_code(lambda: c.delete_subject("nope"))[:2] == (404, 40401)
    # a hard-deleted id is never handed out again
    assert c.register_schema("c-value", Schema(V1_NO_AMOUNT, "AVRO")) == id2 + 1


def test_confluent_serializer_and_deserializer_interoperate_with_our_serde(registry: RegistryServer) -> None:
    c = client(registry.url)
    ctx = SerializationContext("payments.commands", MessageField.VALUE)
    catalogue = Catalogue.load(default_schemas())
    make_payment = catalogue.get("MakePayment").text
    serializer = AvroSerializer(c, make_payment)
    deserializer = AvroDeserializer(c)
    cmd = {
        "envelope": {"id": "cmd-1", "entity_key": "o-1", "type": "MakePayment", "schema_version": 1,
                     "occurred_at": 1_700_000_000_000, "correlation_id": "o-1", "causation_id": "evt-1"},
        "order_id": "o-1", "amount_cents": 1250, "currency": "EUR", "attempt": 1,
    }
    theirs = serializer(cmd, ctx)
    assert theirs is not None and theirs[0] == 0
    decoded = deserializer(theirs, ctx)
    assert decoded is not None and decoded["amount_cents"] == 1250

    serde = Serde(RegistryClient(registry.url), catalogue, "record")
    name, ours_from_theirs = serde.decode(theirs)
    assert name == "streams.orders.MakePayment"
    assert ours_from_theirs == cmd  # timestamps as epoch millis by default ...
    with_datetimes = Serde(RegistryClient(registry.url), catalogue, "record", logical_types=True)
    assert with_datetimes.decode(theirs)[1] == decoded  # ... or as datetimes, exactly as Confluent's reader
    assert decoded["envelope"]["occurred_at"].timestamp() == 1_700_000_000
    # and the other way round: our topic strategy writes a multi-type topic's records under TopicRecordNameStrategy
    # subjects; same schema, same id, whichever subject it was registered under first
    topic_serde = Serde(RegistryClient(registry.url), catalogue, "topic")
    ours = topic_serde.encoder("payments.commands", "MakePayment")(cmd)
    assert deserializer(ours, ctx) == decoded
    assert ours[:5] == theirs[:5]
    assert c.get_latest_version("payments.commands-streams.orders.MakePayment").schema_id \
        == int.from_bytes(ours[1:5], "big")


def test_ids_and_versions_survive_a_restart(kafka: KafkaSettings, unique: str) -> None:
    topic = f"_schemas-{unique}"

    def snapshot(url: str) -> dict[str, Any]:
        c = client(url)
        subjects = c.get_subjects(deleted=True)
        return {
            "subjects": subjects,
            "live": c.get_subjects(),
            "versions": {s: [(v, c.get_version(s, v, deleted=True).schema_id)
                             for v in c.get_versions(s, deleted=True)] for s in subjects},
            "global": c.get_compatibility(),
            "x": c.get_compatibility("x-value"),
        }

    with RegistryServer(kafka, topic=topic) as first:
        c = client(first.url)
        c.set_compatibility("x-value", "NONE")
        for i, schema in enumerate([V1, V2_DEFAULT, V1_NO_AMOUNT, V2_REQUIRED]):
            c.register_schema("x-value", Schema(schema, "AVRO"))
            c.register_schema(f"s{i}-value", Schema(schema, "AVRO"))
        c.delete_version("x-value", 2)
        c.set_compatibility(level="FULL")
        before = snapshot(first.url)
        assert before["versions"]["x-value"] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    with RegistryServer(kafka, topic=topic) as second:
        assert snapshot(second.url) == before
        new_id = client(second.url).register_schema("y-value", Schema(record([{"name": "z", "type": "int"}]), "AVRO"))
        assert new_id == 5


def test_two_instances_on_one_log_agree_under_concurrent_registration(kafka: KafkaSettings, unique: str) -> None:
    topic = f"_schemas-{unique}"
    with RegistryServer(kafka, topic=topic) as a, RegistryServer(kafka, topic=topic) as b:
        client(a.url).set_compatibility(level="NONE")
        schemas = [record([{"name": f"f{i}", "type": "int"}], name=f"R{i}") for i in range(12)]
        results: dict[tuple[str, int], int] = {}
        errors: list[BaseException] = []

        def register(url: str, indexes: range) -> None:
            c = client(url)
            try:
                for i in indexes:
                    results[(url, i)] = c.register_schema("race-value", Schema(schemas[i], "AVRO"))
                    results[(url, i + 100)] = c.register_schema(f"own-{i}", Schema(schemas[0], "AVRO"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=register, args=(url, range(k, 12, 3)))
                   for url in (a.url, b.url) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors

        views = []
        for server in (a, b):
            server.service.log.sync()
            c = client(server.url)
            versions = c.get_versions("race-value")
            views.append([(v, c.get_version("race-value", v).schema_id) for v in versions])
        assert views[0] == views[1]
        assert [v for v, _ in views[0]] == list(range(1, 13))  # every schema got exactly one version, no gaps
        ids = [i for _, i in views[0]]
        assert len(set(ids)) == 12
        # both instances handed every client the id the log settled on
        docs = [json.loads(client(a.url).get_schema(i).schema_str) for i in ids]  # as registered: short names
        by_schema = {f"{doc['namespace']}.{doc['name']}": i for doc, i in zip(docs, ids, strict=True)}
        for (_url, i), schema_id in results.items():
            expected = by_schema[f"test.R{i}"] if i < 100 else by_schema["test.R0"]
            assert schema_id == expected


MALFORMED: list[tuple[str, str, bytes | str | None, dict[str, str], int, int]] = [
    ("POST", "/subjects/x/versions", "{not json", {}, 400, 400),
    ("POST", "/subjects/x/versions", None, {}, 415, 415),
    ("POST", "/subjects/x/versions", "", {"Content-Type": "application/json"}, 400, 400),
    # what a web page may send cross-origin without a preflight (a CORS-simple request): refused
    ("POST", "/subjects/x/versions", json.dumps({"schema": V1}), {"Content-Type": "text/plain"}, 415, 415),
    ("PUT", "/config", json.dumps({"compatibility": "NONE"}), {"Content-Type": "application/x-www-form-urlencoded"},
     415, 415),
    ("POST", "/subjects/x/versions", json.dumps({"schema": 5}), {}, 422, 42201),
    ("POST", "/subjects/x/versions", json.dumps(["schema"]), {}, 422, 42201),
    ("POST", "/subjects/x/versions", json.dumps({"schema": "{\"type\": \"record\"}"}), {}, 422, 42201),
    ("POST", "/subjects/x/versions", json.dumps({"schema": V1, "schemaType": "PROTOBUF"}), {}, 422, 42201),
    ("POST", "/subjects/x/versions", json.dumps({"schema": V1, "references": [{"name": "r"}]}), {}, 422, 42201),
    ("POST", "/subjects/x/versions", "[" * 100_000, {}, 400, 400),
    ("POST", "/subjects/x/versions", "{}", {"Content-Length": "99999999999"}, 413, 413),
    ("POST", "/subjects/x", json.dumps({"schema": "not json"}), {}, 422, 42201),
    ("POST", "/compatibility/subjects/x/versions/latest", json.dumps({"nope": 1}), {}, 422, 42201),
    ("GET", "/subjects/x/versions/abc", None, {}, 422, 42202),
    ("GET", "/subjects/x/versions/-5", None, {}, 422, 42202),
    ("GET", "/subjects/x/versions/99999999999", None, {}, 422, 42202),
    ("DELETE", "/subjects/x/versions/zero", None, {}, 422, 42202),
    ("GET", "/schemas/ids/abc", None, {}, 422, 42202),
    ("GET", "/schemas/ids/-1", None, {}, 422, 42202),
    ("GET", "/subjects?deleted=maybe", None, {}, 400, 400),
    ("GET", "/no/such/path", None, {}, 404, 404),
    ("GET", "/subjects/x/versions/1/schema/extra", None, {}, 404, 404),
    ("DELETE", "/schemas/types", None, {}, 405, 405),
    ("PATCH", "/subjects", "{}", {}, 405, 405),
    ("PUT", "/config", json.dumps({"compatibility": "SIDEWAYS"}), {}, 422, 42203),
    ("PUT", "/config", json.dumps({"compatibility": 3}), {}, 422, 42203),
    ("PUT", "/config/x", json.dumps("FULL"), {}, 422, 42203),
    ("PUT", "/config/x", json.dumps({}), {}, 422, 42203),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "code"), MALFORMED,
                         ids=[f"{m} {p} {str(b)[:20]}" for m, p, b, *_ in MALFORMED])
def test_malformed_requests_get_4xx_json_errors(shared_registry: RegistryServer, method: str, path: str,
                                                body: bytes | str | None, headers: dict[str, str],
                                                status: int, code: int) -> None:
    got, doc = http(shared_registry.url, method, path, body, headers)
    assert (got, doc["error_code"]) == (status, code), doc
    assert isinstance(doc["message"], str) and doc["message"]


def raw_exchange(url: str, request: bytes) -> tuple[bytes, Any]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n") if raw.startswith(b"HTTP/") else (b"", b"", raw)
    try:
        return head, json.loads(body)
    except ValueError:
        return head, body


def test_protocol_level_garbage_gets_4xx_and_the_server_keeps_serving(shared_registry: RegistryServer) -> None:
    """Bytes that are not HTTP are the HTTP server's to refuse (uvicorn answers 400 and closes); our JSON errors
    start once a request parses."""
    registry = shared_registry
    for garbage in (b"THIS IS NOT HTTP\r\n\r\n",
                    b"POST /subjects/x/versions HTTP/1.1\r\nContent-Length: ten\r\n\r\n"):
        head, _ = raw_exchange(registry.url, garbage)
        assert head.startswith(b"HTTP/1.1 400"), head
    head, doc = raw_exchange(registry.url, b"BREW /subjects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403") and "Host" in doc["message"]  # x is no loopback name: rebinding
    head, doc = raw_exchange(registry.url, b"BREW /subjects HTTP/1.1\r\nHost: localhost\r\nConnection: close"
                                           b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and doc["error_code"] == 405
    assert http(registry.url, "GET", "/subjects") == (200, [])


def test_refuses_a_log_written_by_another_registry(kafka: KafkaSettings, unique: str) -> None:
    topic = f"_schemas-{unique}"
    with RegistryServer(kafka, topic=topic):
        pass  # creates the topic the way we would
    producer = Producer(kafka.common())
    # what Confluent Schema Registry writes for version 1 of a subject
    producer.produce(topic, key=b'{"keytype":"SCHEMA","subject":"x-value","version":1,"magic":1}',
                     value=json.dumps({"subject": "x-value", "version": 1, "id": 1, "schema": V1,
                                       "deleted": False}).encode(), partition=0)
    assert producer.flush(10) == 0
    with pytest.raises(ConfigError, match=r"1 schema record\(s\) written by another registry"):
        RegistryServer(kafka, topic=topic).start()


def test_a_client_that_hangs_up_mid_request_leaves_no_traceback(
        shared_registry: RegistryServer, capfd: pytest.CaptureFixture[str]) -> None:
    """A worker killed while registering a schema resets its connection. That is not a server error: the
    registry used to print tracebacks (the reset read, then the failed error answer) into its log for each."""
    hang_up(shared_registry.url, b"POST /subjects/x/versions HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"sch")
    hang_up(shared_registry.url, b"GET /subj")  # reset inside the request line
    assert http(shared_registry.url, "GET", "/subjects") == (200, [])
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


LINE_ITEM = json.dumps({"type": "record", "name": "LineItem", "namespace": "shop", "fields": [
    {"name": "sku", "type": "string"}, {"name": "quantity", "type": "int"}]})
ORDER = json.dumps({"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "string"}, {"name": "items", "type": {"type": "array", "items": "LineItem"}}]})


def test_schema_references_work_with_confluents_client_and_serializers(registry: RegistryServer) -> None:
    c = client(registry.url)
    item_id = c.register_schema("shop.LineItem", Schema(LINE_ITEM, "AVRO"))
    ref = SchemaReference("shop.LineItem", "shop.LineItem", 1)
    with_refs = Schema(ORDER, "AVRO", references=[ref])
    order_id = c.register_schema("refs-value", with_refs)
    assert order_id != item_id
    assert client(registry.url).register_schema("refs-value", with_refs) == order_id  # idempotent, refs included

    # fetched as registered: short name and namespace kept, references returned
    fetched = client(registry.url).get_schema(order_id)
    assert json.loads(fetched.schema_str) == json.loads(ORDER)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [("shop.LineItem", "shop.LineItem", 1)]
    latest = client(registry.url).get_latest_version("refs-value")
    assert (latest.schema_id, [r.subject for r in latest.schema.references]) == (order_id, ["shop.LineItem"])
    found = client(registry.url).lookup_schema("refs-value", with_refs)
    assert (found.schema_id, found.version) == (order_id, 1)
    status, doc = http(registry.url, "GET", "/subjects/shop.LineItem/versions/1/referencedby")
    assert (status, doc) == (200, [order_id])
    assert http(registry.url, "GET", "/subjects/refs-value/versions/1/referencedby") == (200, [])
    # without its reference the schema names an unknown type; a reference to nothing is refused
    assert error_code(lambda: c.register_schema("other-value", Schema(ORDER, "AVRO")))[:2] == (422, 42201)
    dangling = Schema(ORDER, "AVRO", references=[SchemaReference("shop.LineItem", "nope", 1)])
    assert error_code(lambda: c.register_schema("other-value", dangling))[:2] == (422, 42201)
    # a referenced version cannot be deleted while something references it
    assert error_code(lambda: c.delete_version("shop.LineItem", 1))[:2] == (422, 42206)
    assert error_code(lambda: c.delete_subject("shop.LineItem"))[:2] == (422, 42206)

    # compatibility sees through references: a field the referenced type lacks breaks, named with its path
    item_v2 = json.loads(LINE_ITEM)
    item_v2["fields"].append({"name": "note", "type": "string"})  # no default: BACKWARD-incompatible
    c.set_compatibility("shop.LineItem", "NONE")
    c.register_schema("shop.LineItem", Schema(json.dumps(item_v2), "AVRO"))
    breaking = Schema(ORDER, "AVRO", references=[SchemaReference("shop.LineItem", "shop.LineItem", 2)])
    status, doc = http(registry.url, "POST", "/compatibility/subjects/refs-value/versions/latest?verbose=true",
                       json.dumps({"schema": ORDER, "references": [
                           {"name": "shop.LineItem", "subject": "shop.LineItem", "version": 2}]}))
    assert status == 200 and doc["is_compatible"] is False
    assert any("shop.Order.items[].note" in m for m in doc["messages"]), doc
    assert error_code(lambda: c.register_schema("refs-value", breaking))[:2] == (409, 409)

    # Confluent's serializer with the latest version (references resolved by the client), and with the schema and
    # its references given; Confluent's deserializer and ours decode both
    ctx = SerializationContext("refs", MessageField.VALUE)
    order = {"id": "o-1", "items": [{"sku": "a", "quantity": 2}]}
    latest_writer = AvroSerializer(c, None, conf={"auto.register.schemas": False, "use.latest.version": True})
    given_writer = AvroSerializer(c, with_refs, conf={"auto.register.schemas": False})
    serde = Serde(RegistryClient(registry.url), Catalogue.load(default_schemas()))
    for writer in (latest_writer, given_writer):
        data = writer(order, ctx)
        assert data is not None and int.from_bytes(data[1:5], "big") == order_id
        assert AvroDeserializer(client(registry.url))(data, ctx) == order
        assert serde.decode(data) == ("shop.Order", order)
