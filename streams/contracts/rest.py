"""The Confluent Schema Registry REST API over ``http.server``: routing, parsing and JSON errors, nothing else.

Every failure is a JSON body ``{"error_code": ..., "message": ...}``; malformed requests (bad JSON, wrong types,
unknown paths, bad versions or ids) are 4xx. Only a broken store (or a bug) answers 5xx.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from streams.contracts.service import RegistryService
from streams.errors import SchemaRegistryError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY = 16 * 1024 * 1024


class Raw(str):
    """A response body that is already JSON (``/versions/{v}/schema`` returns the schema document itself)."""


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code if code is not None else status


class Query:
    def __init__(self, raw: str) -> None:
        try:
            self._q = parse_qs(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=100)
        except ValueError as exc:
            raise HttpError(400, f"malformed query string: {exc}") from exc

    def flag(self, name: str) -> bool:
        values = self._q.get(name)
        if not values:
            return False
        value = values[-1].lower()
        if value in ("true", "1", ""):
            return True
        if value in ("false", "0"):
            return False
        raise HttpError(400, f"query parameter {name} must be true or false, got {values[-1]!r}")

    def text(self, name: str, default: str = "") -> str:
        values = self._q.get(name)
        return values[-1] if values else default


def _schema_id(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise HttpError(422, f"schema id must be a positive 32-bit integer, got {raw!r}", 42202)
    return int(raw)


Route = Callable[[RegistryService, list[str], Query, Any], Any]

# (path pattern, None = a path parameter) -> {method: handler(service, parameters, query, body)}
ROUTES: list[tuple[tuple[str | None, ...], dict[str, Route]]] = [
    ((), {"GET": lambda s, p, q, b: {}}),
    (("subjects",), {"GET": lambda s, p, q, b: s.subjects(q.flag("deleted"), q.flag("deleted_only"),
                                                          q.text("subjectPrefix"))}),
    (("subjects", None), {
        "POST": lambda s, p, q, b: s.lookup(p[0], b, q.flag("deleted")),
        "DELETE": lambda s, p, q, b: s.delete_subject(p[0], q.flag("permanent")),
    }),
    (("subjects", None, "versions"), {
        "GET": lambda s, p, q, b: s.versions(p[0], q.flag("deleted"), q.flag("deleted_only")),
        "POST": lambda s, p, q, b: s.register(p[0], b),
    }),
    (("subjects", None, "versions", None), {
        "GET": lambda s, p, q, b: s.version(p[0], p[1], q.flag("deleted")),
        "DELETE": lambda s, p, q, b: s.delete_version(p[0], p[1], q.flag("permanent")),
    }),
    (("subjects", None, "versions", None, "schema"), {
        "GET": lambda s, p, q, b: Raw(s.version(p[0], p[1], q.flag("deleted"))["schema"]),
    }),
    (("subjects", None, "versions", None, "referencedby"), {
        "GET": lambda s, p, q, b: s.referenced_by(p[0], p[1]),
    }),
    (("schemas", "types"), {"GET": lambda s, p, q, b: ["AVRO"]}),
    (("schemas", "ids", None), {"GET": lambda s, p, q, b: s.schema_by_id(_schema_id(p[0]))}),
    (("schemas", "ids", None, "versions"), {
        "GET": lambda s, p, q, b: s.id_versions(_schema_id(p[0]), q.flag("deleted")),
    }),
    (("schemas", "ids", None, "subjects"), {
        "GET": lambda s, p, q, b: sorted({v["subject"] for v in s.id_versions(_schema_id(p[0]), q.flag("deleted"))}),
    }),
    (("config",), {
        "GET": lambda s, p, q, b: s.config(None, True),
        "PUT": lambda s, p, q, b: s.set_config(None, b),
        "DELETE": lambda s, p, q, b: s.delete_config(None),
    }),
    (("config", None), {
        "GET": lambda s, p, q, b: s.config(p[0], q.flag("defaultToGlobal")),
        "PUT": lambda s, p, q, b: s.set_config(p[0], b),
        "DELETE": lambda s, p, q, b: s.delete_config(p[0]),
    }),
    (("compatibility", "subjects", None, "versions"), {
        "POST": lambda s, p, q, b: s.test_compatibility(p[0], None, b, q.flag("verbose")),
    }),
    (("compatibility", "subjects", None, "versions", None), {
        "POST": lambda s, p, q, b: s.test_compatibility(p[0], p[1], b, q.flag("verbose")),
    }),
    (("mode",), {"GET": lambda s, p, q, b: {"mode": "READWRITE"}}),
]


def route(svc: RegistryService, method: str, segs: list[str], q: Query, body: Any) -> Any:
    """The answer to one request; raises SchemaRegistryError or HttpError."""
    for pattern, methods in ROUTES:
        if len(pattern) == len(segs) and all(p is None or p == s for p, s in zip(pattern, segs, strict=True)):
            handler = methods.get(method)
            if handler is None:
                raise HttpError(405, f"HTTP 405 Method Not Allowed: {method} /{'/'.join(segs)} "
                                     f"(allowed: {', '.join(methods)})")
            params = [s for p, s in zip(pattern, segs, strict=True) if p is None]
            return handler(svc, params, q, body)
    raise HttpError(404, f"HTTP 404 Not Found: no such resource /{'/'.join(segs)}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: confluent-kafka's client reuses connections
    server: RegistryHTTPServer
    error_content_type = CONTENT_TYPE

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            # The client went away (a worker killed mid-request): no one to answer, and not a server error.
            # Unhandled, the stdlib printed a traceback into the registry's log for each such connection.
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        try:
            parts = urlsplit(self.path)
            segs = [unquote(s) for s in parts.path.split("/") if s]
            query = Query(parts.query)
            body = self._body() if method in ("POST", "PUT") else None
            self._send(200, route(self.server.service, method, segs, query, body))
        except SchemaRegistryError as exc:
            self._send(exc.http_status, {"error_code": exc.code, "message": str(exc)})
        except HttpError as exc:
            self._send(exc.status, {"error_code": exc.code, "message": str(exc)})
        except ConnectionError:
            raise  # not a bug of ours: see handle()
        except Exception as exc:  # a bug: answer 500 in the API's shape and keep serving
            traceback.print_exc(file=sys.stderr)
            self._send(500, {"error_code": 50001, "message": f"internal error: {type(exc).__name__}"})

    def _body(self) -> Any:
        # A body we refuse to read leaves bytes on the connection: close it rather than misread them as a request.
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise HttpError(411, "chunked request bodies are not supported: send Content-Length")
        raw_length = self.headers.get("Content-Length") or "0"
        if not raw_length.isdigit():
            self.close_connection = True
            raise HttpError(400, f"invalid Content-Length {raw_length!r}")
        length = int(raw_length)
        if length > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, f"request body of {length} bytes exceeds {MAX_BODY}")
        data = self.rfile.read(length) if length else b""
        if not data.strip():
            raise HttpError(400, "a JSON request body is required", 400)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}", 400) from exc

    def _send(self, status: int, payload: Any) -> None:
        data = (payload if isinstance(payload, Raw) else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method) in the API's JSON shape too."""
        self.close_connection = True
        if code == 501:  # the stdlib's answer to a method it has no do_* for: a client error, not ours
            code, message = 405, f"HTTP 405 Method Not Allowed: {self.command}"
        with contextlib.suppress(OSError):
            self._send(code, {"error_code": code, "message": message or self.responses.get(code, ("",))[0]})

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            sys.stderr.write(f"registry: {self.address_string()} {format % args}\n")


class RegistryHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: RegistryService, access_log: bool = False) -> None:
        self.service = service
        self.access_log = access_log
        super().__init__(address, Handler)
