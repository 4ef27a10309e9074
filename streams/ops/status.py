"""Each worker's HTTP face: ``/metrics``, ``/healthz`` and status queries over the entities it holds.

``GET /workflows/{key}`` answers from the worker that owns the key's partition. A worker that does not own it
forwards the request: every worker announces ``{url, partitions}`` in a compacted endpoints topic, and the key's
partition is computed with Kafka's murmur2 partitioner, which is how the key was placed. ``GET /workflows``
lists this worker's entities (``?state=``, ``?stuck=true``, paging with ``?limit=`` and ``?after=KEY``).

Bound to 127.0.0.1 by default. Bound anywhere else it refuses to start without a bearer token, and then asks for
``Authorization: Bearer <token>`` on every request; the token never appears in logs or errors.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from streams.config import KafkaSettings, http_url
from streams.errors import StreamsError, WorkerUnreachableError
from streams.kafka.client import read_to_end
from streams.kafka.io import Producer
from streams.kafka.partition import partition_of as partition_for
from streams.ops.httpauth import bearer_ok, check_bind
from streams.ops.signal import SignalError, Signaller, describe_error
from streams.runtime.worker import Worker

H_FORWARDED = "X-Streams-Forwarded"
_MAX_SIGNAL_BODY = 1 << 20

__all__ = ["Endpoints", "StatusServer", "partition_for"]


def get_entity(base_url: str, key: str, token: str | None, timeout_s: float,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``GET {base_url}/workflows/{key}`` on a worker: its HTTP status and JSON body (errors included).

    A URL that is not http(s)://HOST[:PORT] is a ConfigError; a worker that does not answer is a
    WorkerUnreachableError naming the URL, so neither reaches the caller as urllib's own exception.
    """
    http_url(base_url, "a worker URL")
    req = urllib.request.Request(f"{base_url.rstrip('/')}/workflows/{urllib.parse.quote(key, safe='')}",
                                 headers={**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), _json(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        raise WorkerUnreachableError(f"worker unreachable at {base_url}: {getattr(exc, 'reason', exc)}") from exc


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        body = None
    return body if isinstance(body, dict) else {"message": raw[:200].decode("utf-8", "replace")}


class Endpoints:
    """Who serves which partition, announced by the workers themselves in a compacted topic."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._producer = Producer({**kafka.common(), "enable.idempotence": True})
        self._cache: tuple[float, dict[int, str]] = (0.0, {})

    def announce(self, instance: str, url: str, partitions: list[int]) -> None:
        body = orjson.dumps({"url": url, "partitions": partitions, "at": int(time.time() * 1000)})
        self._producer.produce(self.topic, body, instance.encode())
        self._producer.flush(10)

    def owner(self, partition: int, max_age_s: float = 2.0) -> str | None:
        at, owners = self._cache
        if time.monotonic() - at > max_age_s:
            owners = self._read()
            self._cache = (time.monotonic(), owners)
        return owners.get(partition)

    def _read(self) -> dict[int, str]:
        latest: dict[bytes, dict[str, Any]] = {}
        for m in read_to_end(self.kafka, self.topic, timeout_s=5):
            if m.key() is not None and m.value():
                latest[m.key()] = orjson.loads(m.value())
        owners: dict[int, tuple[int, str]] = {}
        for ann in latest.values():
            for p in ann["partitions"]:
                if p not in owners or ann["at"] > owners[p][0]:
                    owners[p] = (ann["at"], ann["url"])
        return {p: url for p, (_at, url) in owners.items()}


class StatusServer:
    def __init__(self, worker: Worker, describe: Callable[[bytes, int], dict[str, Any]] | None, partitions: int,
                 host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 endpoints: Endpoints | None = None, signaller: Signaller | None = None) -> None:
        check_bind(host, token, "--http-token")
        self.signaller = signaller
        self.worker = worker
        self.describe = describe
        self.partitions = partitions
        self.token = token
        self.endpoints = endpoints
        self.advertised: str | None = None  # what other workers reach us at; set by whoever wires us
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    @property
    def public_url(self) -> str:
        return self.advertised or self.url

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def authorized(self, header: str | None) -> bool:
        return bearer_ok(header, self.token)

    def signal(self, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /workflows/{key}/events``: ``{"type": EVENT, "data": {...}, "id": optional}`` → 202."""
        if self.signaller is None:
            return 404, {"error": "not_found", "message": "this worker runs no workflow to signal"}
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 400, {"error": "bad_request", "message": f"the body is not JSON: {exc}"}
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            return 400, {"error": "bad_request", "message": 'expected {"type": EVENT, "data": {...}}',
                         "field": "type"}
        data, event_id = doc.get("data", {}), doc.get("id")
        if not isinstance(data, dict):
            return 400, {"error": "bad_request", "message": "data must be a JSON object", "field": "data"}
        if event_id is not None and not isinstance(event_id, str):
            return 400, {"error": "bad_request", "message": "id must be a string", "field": "id"}
        try:
            return 202, self.signaller.send(key, doc["type"], data, event_id).as_dict()
        except SignalError as exc:
            return 400, describe_error(exc)
        except StreamsError as exc:
            return 503, describe_error(exc)

    def entity(self, key: bytes, forwarded: bool) -> tuple[int, dict[str, Any]]:
        found = self.worker.lookup(key)
        parked = self.worker.parked(key)
        now_ms = int(time.time() * 1000)
        if found is not None or parked is not None:
            body: dict[str, Any] = {"state": None}  # no state yet: only events waiting for it so far
            p = parked[0] if parked else 0
            if found is not None:
                p, raw = found
                body = self.describe(raw, now_ms) if self.describe else {"state": raw.hex()}
            body["parked"] = [{"event_id": e, "until": until} for e, until in (parked[1] if parked else [])]
            return 200, {"key": key.decode("utf-8", "replace"), "partition": p, "served_by": self.public_url,
                         **body}
        p = partition_for(key, self.partitions)
        owner = self.endpoints.owner(p) if self.endpoints and not forwarded else None
        if owner and owner != self.public_url:
            return self._forward(owner, key)
        return 404, {"error": "not_found", "message": f"no entity {key.decode('utf-8', 'replace')!r} "
                     f"(partition {p}) on this worker or its owner"}

    def _forward(self, owner: str, key: bytes) -> tuple[int, dict[str, Any]]:
        try:
            return get_entity(owner, key.decode("utf-8", "replace"), self.token, 5.0, {H_FORWARDED: "1"})
        except StreamsError as exc:
            return 502, {"error": "owner_unreachable", "message": f"the owner of the key: {exc}"}

    def listing(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        state = _first(query, "state")
        stuck = (_first(query, "stuck") or "false").lower() == "true"
        try:
            limit = min(max(int((query.get("limit") or ["50"])[0]), 1), 1000)
        except ValueError:
            return 400, {"error": "bad_request", "message": "limit must be an integer"}
        after = _first(query, "after")
        now_ms = int(time.time() * 1000)
        describe = self.describe

        def keep(raw: bytes) -> bool:
            if describe is None:
                return state is None and not stuck
            view = describe(raw, now_ms)
            return (state is None or view.get("state") == state) and (not stuck or bool(view.get("stuck")))

        rows = self.worker.scan(after.encode() if after else None, limit, keep)
        items = [{"key": k.decode("utf-8", "replace"), **(describe(raw, now_ms) if describe else {})}
                 for k, raw in rows]
        nxt = items[-1]["key"] if len(items) == limit else None
        return 200, {"items": items, "next_after": nxt, "served_by": self.public_url}


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _handler(srv: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: no per-request lines, no tokens in logs
            return

        def handle(self) -> None:
            try:
                super().handle()
            except ConnectionError:
                self.close_connection = True  # the client went away before its answer: nothing to report

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if not srv.authorized(self.headers.get("Authorization")):
                self._send(401, b'{"error":"unauthorized","message":"bearer token required"}')
                return
            url = urllib.parse.urlsplit(self.path)
            path = url.path.rstrip("/")
            if path == "/metrics":
                self._send(200, srv.worker.metrics.exposition(), "text/plain; version=0.0.4")
            elif path == "/healthz":
                self._send(200, orjson.dumps({"ok": True, "partitions": srv.worker.active}))
            elif path == "/workflows":
                status, body = srv.listing(urllib.parse.parse_qs(url.query))
                self._send(status, orjson.dumps(body))
            elif path.startswith("/workflows/"):
                key = urllib.parse.unquote(path[len("/workflows/"):]).encode()
                status, body = srv.entity(key, self.headers.get(H_FORWARDED) is not None)
                self._send(status, orjson.dumps(body))
            else:
                self._send(404, b'{"error":"not_found","message":"unknown path"}')

        def do_POST(self) -> None:
            if not srv.authorized(self.headers.get("Authorization")):
                self._send(401, b'{"error":"unauthorized","message":"bearer token required"}')
                return
            path = urllib.parse.urlsplit(self.path).path.rstrip("/")
            if not (path.startswith("/workflows/") and path.endswith("/events")):
                self._send(404, b'{"error":"not_found","message":"unknown path"}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_SIGNAL_BODY:
                self._send(413, b'{"error":"too_large","message":"a signal body is at most 1 MiB"}')
                return
            key = urllib.parse.unquote(path[len("/workflows/"):-len("/events")])
            status, body = srv.signal(key, self.rfile.read(length))
            self._send(status, orjson.dumps(body))

    return Handler
