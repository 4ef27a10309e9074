"""Each worker's HTTP face: ``/metrics``, ``/healthz`` and status queries over the entities it holds.

``GET /workflows/{key}`` answers from the worker that owns the key's partition. A worker that does not own it
forwards the request: every worker announces ``{url, partitions}`` in a compacted endpoints topic, and the key's
partition is computed with Kafka's murmur2 partitioner, which is how the key was placed. ``GET /workflows``
lists this worker's entities (``?state=``, ``?stuck=true``, paging with ``?limit=`` and ``?after=KEY``).

Bound to 127.0.0.1 by default. Bound anywhere else it refuses to start without a bearer token, and then asks for
``Authorization: Bearer <token>`` on every request (``streams.web``); the token never appears in logs or errors,
and is never sent to another worker: a forwarded query carries a read-only credential derived from it.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from streams.config import KafkaSettings, http_url
from streams.errors import ConfigError, KafkaUnavailableError, StreamsError, WorkerUnreachableError
from streams.kafka.client import read_to_end
from streams.kafka.io import Producer
from streams.kafka.partition import partition_of as partition_for
from streams.ops.signal import SignalError, Signaller
from streams.runtime.heartbeat import Heartbeats, health, run_rounds
from streams.runtime.worker import Worker
from streams.web import FLAG, TEXT, Access, App, Call, HttpError, Limits, Op, Server, is_loopback

H_FORWARDED = "X-Streams-Forwarded"

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
    """Who serves which partition, announced by the workers themselves in a compacted topic.

    An announcement is believed only if it proves it comes from a member: signed with an HMAC keyed by a key
    derived from the group's shared token (without a token, only loopback URLs are believed: the servers of such a
    group are loopback-only), pointing at http(s) on an ``allow_hosts`` host when the operator lists them, and
    leased: it expires :data:`LEASE_S` after it was made, checked on the reader's clock, so it cannot outlive its
    worker, which renews it while it runs. The latest valid announcement in the log wins a partition, not the
    one claiming the latest time. An invalid one is ignored and logged once.
    """

    LEASE_S = 30.0

    def __init__(self, kafka: KafkaSettings, topic: str, token: str | None = None,
                 allow_hosts: tuple[str, ...] = (), log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.kafka = kafka
        self.topic = topic
        self._key = _derive(token, "endpoints", topic)
        self.forward_token = _derive(token, "forward", topic)
        self.allow_hosts = allow_hosts
        self._log = log or (lambda _m: None)
        self._clock = clock
        self._producer: Producer | None = None  # made on the first announcement: readers never produce
        self._cache: tuple[float, dict[int, str]] = (0.0, {})
        self._mine: tuple[str, str, list[int]] | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._reported: set[bytes] = set()
        self.heartbeats = Heartbeats()  # the renewer's; the status server's /healthz reads it

    def announce(self, instance: str, url: str, partitions: list[int]) -> None:
        """Announce (and keep renewing until ``close()``) that ``instance`` serves ``partitions`` at ``url``."""
        self._mine = (instance, url, list(partitions))
        try:
            self._publish()
        except KafkaUnavailableError as exc:  # the renewer tries again; a rebalance must not fail for it
            self._log(f"status: announcing this worker's endpoint: {exc}")
        if self._renewer is None:
            # Overdue once a lease has passed without a renewal: the announcement has then expired.
            self._renewer = run_rounds(self.heartbeats, "endpoints-renewer", self._publish, self.LEASE_S / 3,
                                       self._stop, self._log, overdue_s=self.LEASE_S)

    def close(self) -> None:
        self._stop.set()

    def _publish(self) -> None:
        if self._mine is None:
            return
        instance, url, partitions = self._mine
        ann: dict[str, Any] = {"url": url, "partitions": partitions, "expires": self._clock() + self.LEASE_S}
        ann["sig"] = self._sign(instance, ann)
        if self._producer is None:
            self._producer = Producer({**self.kafka.common(), "enable.idempotence": True})
        self._producer.produce(self.topic, orjson.dumps(ann), instance.encode())
        if self._producer.flush(10):
            raise KafkaUnavailableError(f"announcing on {self.topic}: not acknowledged within 10s")

    def _sign(self, instance: str, ann: dict[str, Any]) -> str:
        text = orjson.dumps([instance, ann.get("url"), ann.get("partitions"), ann.get("expires")])
        return hmac.new(self._key.encode(), text, hashlib.sha256).hexdigest() if self._key else ""

    def owner(self, partition: int, max_age_s: float = 2.0) -> str | None:
        at, owners = self._cache
        if time.monotonic() - at > max_age_s:
            owners = self._read()
            self._cache = (time.monotonic(), owners)
        return owners.get(partition)

    def _read(self) -> dict[int, str]:
        owners: dict[int, str] = {}
        for ann in self.announced().values():
            for p in ann["partitions"]:
                owners[p] = ann["url"]
        return owners

    def announced(self) -> dict[str, dict[str, Any]]:
        """Every announcement believed right now, by instance, in log order: the group's live HTTP workers
        (the dashboard scrapes their ``/metrics``). A topic that cannot be read raises a StreamsError."""
        latest: dict[bytes, bytes] = {}
        for m in read_to_end(self.kafka, self.topic, timeout_s=5):
            if m.key() is not None and m.value():
                latest.pop(m.key(), None)  # re-inserted: the dict keeps log order, the latest last
                latest[m.key()] = m.value()
        believed: dict[str, dict[str, Any]] = {}
        for key, value in latest.items():
            ann, problem = self._check(key, value)
            if problem is not None:
                if (key + value) not in self._reported:
                    self._reported.add(key + value)
                    self._log(f"status: ignoring an endpoint announcement in {self.topic} "
                              f"(key {key[:64].decode('utf-8', 'replace')!r}): {problem}")
                continue
            believed[key.decode("utf-8", "replace")] = ann
        return believed

    def _check(self, key: bytes, value: bytes) -> tuple[dict[str, Any], str | None]:
        """(the announcement, why it is not believed, or None)."""
        try:
            ann = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}, "not JSON"
        if not (isinstance(ann, dict) and isinstance(ann.get("url"), str) and isinstance(ann.get("partitions"), list)
                and all(isinstance(p, int) for p in ann["partitions"])
                and isinstance(ann.get("expires"), int | float) and isinstance(ann.get("sig"), str)):
            return {}, "not an announcement {url, partitions, expires, sig}"
        now = self._clock()
        if not now < ann["expires"] <= now + 2 * self.LEASE_S:
            return ann, "its lease is over (or claims more than a lease)"
        parts = urllib.parse.urlsplit(ann["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return ann, "its URL is not http(s)://HOST[:PORT]"
        if self.allow_hosts and parts.hostname not in self.allow_hosts:
            return ann, f"{parts.hostname} is not an allowed host"
        if self._key is None:
            if not is_loopback(parts.hostname):
                return ann, "without a token only loopback endpoints are believed"
        elif not hmac.compare_digest(ann["sig"], self._sign(key.decode("utf-8", "replace"), ann)):
            return ann, "its signature does not match the group's key"
        return ann, None


def _derive(token: str | None, purpose: str, topic: str) -> str | None:
    """A per-group secret for one purpose, derived from the shared token: what it signs or opens cannot be
    turned into the token itself."""
    if not token:
        return None
    return hmac.new(token.encode(), f"streams-{purpose}:{topic}".encode(), hashlib.sha256).hexdigest()


def _ops(srv: StatusServer) -> list[Op]:
    key = {"key": {"type": "string", "minLength": 1}}
    listing_query: dict[str, Mapping[str, Any]] = {
        "state": TEXT, "stuck": FLAG, "limit": {"type": "integer", "minimum": 1, "maximum": 1000}, "after": TEXT}
    signal_body = {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string"}, "data": {"type": "object"}, "id": {"type": "string"}}}
    return [
        Op("GET", "/metrics", lambda c: Response(srv.worker.metrics.exposition(),
                                                 media_type="text/plain; version=0.0.4"), produces="text/plain"),
        Op("GET", "/healthz", lambda c: srv.health(), summary="200 ok, or 503 naming a background thread that died "
           "or is overdue"),
        Op("GET", "/workflows", srv.listing, query=listing_query, summary="this worker's entities"),
        Op("GET", "/workflows/{key}", lambda c: srv.entity(c.params["key"].encode(), H_FORWARDED in c.headers),
           params=key, summary="one entity, from whichever worker owns it"),
        Op("POST", "/workflows/{key}/events", lambda c: srv.signal(c.params["key"], c.body), "write",
           "send a signal into the entity's workflow", params=key, body=signal_body),
    ]


class StatusServer:
    def __init__(self, worker: Worker, describe: Callable[[bytes, int], dict[str, Any]] | None, partitions: int,
                 host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 endpoints: Endpoints | None = None, signaller: Signaller | None = None) -> None:
        forward = endpoints.forward_token if endpoints is not None else None
        access = Access(token, tokens={forward: "read"} if forward else {})
        access.check_bind(host, "--http-token")
        self.signaller = signaller
        self.worker = worker
        self.describe = describe
        self.partitions = partitions
        self.token = token
        self.endpoints = endpoints
        self.advertised: str | None = None  # what other workers reach us at; set by whoever wires us
        app = App("streams worker", _ops(self), access, bind_host=host, limits=Limits(body_bytes=1 << 20))
        self._http = Server(app, host, port, "worker-http")
        try:
            self._http.bind()  # the URL is known (and a taken port fails) before start(), as callers expect
        except OSError as exc:  # a taken port, an address not on this machine, a name that does not resolve
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

    @property
    def url(self) -> str:
        return self._http.url()

    @property
    def public_url(self) -> str:
        return self.advertised or self.url

    def start(self) -> StatusServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def health(self) -> Response:
        status, body = health(self.worker.heartbeats, self.endpoints.heartbeats if self.endpoints else None,
                              partitions=self.worker.active)
        return Response(orjson.dumps(body), status, media_type="application/json")

    def signal(self, key: str, doc: dict[str, Any]) -> Response:
        """``POST /workflows/{key}/events``: ``{"type": EVENT, "data": {...}, "id": optional}`` → 202."""
        if self.signaller is None:
            raise HttpError(404, "this worker runs no workflow to signal")
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise HttpError(400, 'expected {"type": EVENT, "data": {...}}', field="type")
        data, event_id = doc.get("data", {}), doc.get("id")
        if not isinstance(data, dict):
            raise HttpError(400, "data must be a JSON object", field="data")
        if event_id is not None and not isinstance(event_id, str):
            raise HttpError(400, "id must be a string", field="id")
        try:
            sent = self.signaller.send(key, doc["type"], data, event_id).as_dict()
        except SignalError as exc:
            if exc.field is None:
                raise HttpError(400, str(exc)) from exc
            raise HttpError(400, str(exc), field=exc.field) from exc
        except StreamsError as exc:
            raise HttpError(503, str(exc)) from exc
        return Response(orjson.dumps(sent), 202, media_type="application/json")

    def entity(self, key: bytes, forwarded: bool) -> Any:
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
            return {"key": key.decode("utf-8", "replace"), "partition": p, "served_by": self.public_url, **body}
        p = partition_for(key, self.partitions)
        owner = self.endpoints.owner(p) if self.endpoints and not forwarded else None
        if owner and owner != self.public_url:
            return self._forward(owner, key)
        raise HttpError(404, f"no entity {key.decode('utf-8', 'replace')!r} (partition {p}) on this worker or "
                             f"its owner")

    def _forward(self, owner: str, key: bytes) -> Response:
        """Ask the owner, with the group's forwarding credential (read-only, derived), never the caller's."""
        cred = self.endpoints.forward_token if self.endpoints else None
        headers = {H_FORWARDED: "1", **({"Authorization": f"Bearer {cred}"} if cred else {})}
        try:
            status, body = get_entity(owner, key.decode("utf-8", "replace"), None, 5.0, headers)
        except StreamsError as exc:
            raise HttpError(502, f"the owner of the key: {exc}") from exc
        return Response(orjson.dumps(body), status, media_type="application/json")

    def listing(self, call: Call) -> dict[str, Any]:
        state = call.query.get("state")
        stuck = call.flag("stuck")
        raw_limit = call.text("limit", "50")
        if not raw_limit.isdigit():
            raise HttpError(400, f"limit must be an integer, got {raw_limit!r}", field="limit")
        limit = min(max(int(raw_limit), 1), 1000)
        after = call.query.get("after")
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
        return {"items": items, "next_after": nxt, "served_by": self.public_url}
