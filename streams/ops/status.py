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

import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from streams.config import http_url
from streams.errors import StreamsError, WorkerUnreachableError
from streams.kafka.partition import partition_of as partition_for
from streams.ops.endpoints import Endpoints
from streams.ops.signal import SignalError, Signaller
from streams.runtime.heartbeat import health
from streams.runtime.worker import Worker
from streams.web import FLAG, TEXT, Access, App, Call, HttpError, Limits, Op, Server, bearer, get, json_answer

H_FORWARDED = "X-Streams-Forwarded"

__all__ = ["Endpoints", "StatusServer", "partition_for"]


def get_entity(base_url: str, key: str, token: str | None, timeout_s: float,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``GET {base_url}/workflows/{key}`` on a worker: its HTTP status and JSON body (errors included).

    A URL that is not http(s)://HOST[:PORT] is a ConfigError; a worker that does not answer is a
    WorkerUnreachableError naming the URL, so neither reaches the caller as urllib's own exception.
    """
    http_url(base_url, "a worker URL")
    try:
        status, raw = get(f"{base_url.rstrip('/')}/workflows/{urllib.parse.quote(key, safe='')}", timeout_s,
                          {**(headers or {}), **bearer(token)})
    except OSError as exc:
        raise WorkerUnreachableError(f"worker unreachable at {base_url}: {getattr(exc, 'reason', exc)}") from exc
    return status, _json(raw)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        body = None
    return body if isinstance(body, dict) else {"message": raw[:200].decode("utf-8", "replace")}


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
        self.endpoints = endpoints
        self.advertised: str | None = None  # what other workers reach us at; set by whoever wires us
        app = App("streams worker", _ops(self), access, bind_host=host, limits=Limits(body_bytes=1 << 20))
        self._http = Server(app, host, port, "worker-http")
        self._http.bind()  # the URL is known (and a taken port fails) before start(), as callers expect

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
        return json_answer(*health(self.worker.heartbeats, self.endpoints.heartbeats if self.endpoints else None,
                                   partitions=self.worker.active))

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
        return json_answer(202, sent)

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
        try:
            return json_answer(*get_entity(owner, key.decode("utf-8", "replace"), cred, 5.0, {H_FORWARDED: "1"}))
        except StreamsError as exc:
            raise HttpError(502, f"the owner of the key: {exc}") from exc

    def listing(self, call: Call) -> dict[str, Any]:
        state = call.query.get("state")
        stuck = call.flag("stuck")
        raw_limit = call.query.get("limit", "50")
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
