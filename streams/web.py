"""The one HTTP layer of the schema registry, the workers' status servers and the dashboard.

Starlette on uvicorn: an ASGI server that survives clients hanging up, slow clients and keep-alive by itself, with
a small request/response API and no code generation. Each server is a table of :class:`Op` (method, path, the
right it needs, its query and body schemas); this module routes them, authenticates, bounds every request, answers
every failure as JSON ``{"error_code": N, "message": ...}`` (Confluent's shape; the registry's codes, the HTTP
status elsewhere) and publishes the table as ``/openapi.json``. The servers run in-process in a thread of their
own (:class:`Server`), so a CLI command and a test start them alike.

Security, once for all three: bound to loopback a server needs no credentials (unless given some); bound anywhere
else it refuses to start without them. Credentials are a bearer token (every right) or, for the registry, HTTP
basic users with ``read``, ``write`` or ``admin`` rights; they are compared in constant time and never logged.
A request with a body must say it is JSON, so no CORS-simple request (a ``text/plain`` POST from a web page) is
accepted; a loopback server only answers Host headers naming loopback, which defeats DNS rebinding.

Bounds: a body limit (413), a deadline per request (503; the abandoned handler finishes in its thread), a bounded
pool of handler threads, uvicorn's concurrent-connection limit and idle keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from streams.errors import ConfigError

JSON_TYPES = frozenset({"application/json", "application/vnd.schemaregistry.v1+json",
                        "application/vnd.schemaregistry+json"})
RIGHTS = ("public", "read", "write", "admin")
_LOG = logging.getLogger("streams.http")


class HttpError(Exception):
    """An answer other than 200: ``status``, a message naming what was wrong, and an ``error_code``."""

    def __init__(self, status: int, message: str, code: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code if code is not None else status
        self.extra = extra


def json_answer(status: int, body: Any) -> Response:
    """A JSON answer with a status of the handler's choosing (202, a health check's 503, a forwarded status)."""
    return Response(orjson.dumps(body), status, media_type="application/json")


def bearer(token: str | None) -> dict[str, str]:
    """The header presenting ``token``, or none without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def get(url: str, timeout_s: float, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """``GET url``: (status, body) for every HTTP answer, errors included; OSError when nothing answers and
    ValueError for a URL urllib cannot use, which callers name in their own terms."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout_s) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---------------------------------------------------------------------------------------------- access


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine: a loopback address or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it is not loopback


@dataclass(frozen=True)
class Access:
    """Who may do what. ``token``: a bearer token with every right; ``users``: basic-auth name -> (password,
    right); ``tokens``: more bearer tokens -> right (a derived forwarding credential); ``loopback_free``: clients on
    this machine need no credentials (the registry's rule; the others ask every client once they have a token)."""

    token: str | None = field(default=None, repr=False)
    users: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    loopback_free: bool = False

    @property
    def required(self) -> bool:
        return bool(self.token or self.users)

    def check_bind(self, host: str, flag: str = "--token") -> None:
        """Refuse to serve beyond this machine without credentials; ``flag`` is the command's own option."""
        if not is_loopback(host) and not self.required:
            raise ConfigError(f"refusing to bind {host}: a non-loopback address needs a bearer token (pass {flag} or "
                              f"set STREAMS_HTTP_TOKEN), or bind 127.0.0.1")

    def right(self, authorization: str | None, client: str | None) -> tuple[str, bool]:
        """(the right a request has, whether it presented valid credentials)."""
        scheme, _, given = (authorization or "").partition(" ")
        scheme, given = scheme.lower(), given.strip()
        if scheme == "bearer" and given:
            for secret, right in ((self.token, "admin"), *self.tokens.items()):
                if secret and hmac.compare_digest(given.encode(), secret.encode()):
                    return right, True
        elif scheme == "basic" and given:
            try:
                name, _, password = base64.b64decode(given, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name, password = "", ""
            known = self.users.get(name)
            if known and hmac.compare_digest(password.encode(), known[0].encode()):
                return known[1], True
        if not self.required or (self.loopback_free and client is not None and is_loopback(client)):
            return "admin", False
        return "public", False


def parse_user(text: str) -> tuple[str, tuple[str, str]]:
    """``NAME:PASSWORD[:RIGHT]`` (right ``read``, ``write`` or ``admin``; default ``write``) as a user entry."""
    name, _, rest = text.partition(":")
    password, _, right = rest.rpartition(":") if rest.rsplit(":", 1)[-1] in RIGHTS[1:] else (rest, "", "write")
    if not name or not password:
        raise ConfigError("a user is NAME:PASSWORD[:read|write|admin], with a non-empty name and password")
    return name, (password, right)


# ---------------------------------------------------------------------------------------------- operations


@dataclass
class Call:
    """What a handler sees: path parameters, the query (last value wins) and the parsed JSON body."""

    params: dict[str, str]
    query: dict[str, str]
    body: Any
    headers: Mapping[str, str]

    def flag(self, name: str) -> bool:
        value = self.query.get(name)
        if value is None:
            return False
        if value.lower() in ("true", "1", ""):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise HttpError(400, f"query parameter {name} must be true or false, got {value!r}", name=name)


@dataclass(frozen=True)
class Op:
    """One operation: ``handler(call)`` returns JSON-able data, or a Starlette ``Response`` sent as it is."""

    method: str
    path: str  # /subjects/{subject}/versions: a {name} is one path segment, percent-decoded
    handler: Callable[[Call], Any]
    right: str = "read"
    summary: str = ""
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> JSON schema
    body: Mapping[str, Any] | None = None  # JSON schema of a JSON body; None: no body
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path parameter -> JSON schema
    produces: str = "application/json"
    inline: bool = False  # cheap and non-blocking: answered on the event loop, not in a handler thread


FLAG: Mapping[str, Any] = {"type": "boolean"}
TEXT: Mapping[str, Any] = {"type": "string"}


def _match(ops: list[Op], method: str, segs: list[str]) -> tuple[Op, dict[str, str]]:
    allowed: list[str] = []
    for op in ops:
        pat = [s for s in op.path.split("/") if s]
        if len(pat) != len(segs) or not all(p.startswith("{") or p == s for p, s in zip(pat, segs, strict=True)):
            continue
        if op.method != method:
            allowed.append(op.method)
            continue
        return op, {p[1:-1]: s for p, s in zip(pat, segs, strict=True) if p.startswith("{")}
    if allowed:
        raise HttpError(405, f"HTTP 405 Method Not Allowed: {method} /{'/'.join(segs)} (allowed: "
                             f"{', '.join(sorted(set(allowed)))})")
    raise HttpError(404, f"HTTP 404 Not Found: no such resource /{'/'.join(segs)}")


def openapi(title: str, ops: list[Op]) -> dict[str, Any]:
    """The OpenAPI 3 document of a table of operations (what schemathesis and API clients read)."""
    error = {"description": "an error naming what was wrong",
             "content": {"application/json": {"schema": {
                 "type": "object", "required": ["error_code", "message"],
                 "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}}}}}}
    paths: dict[str, Any] = {}
    for op in ops:
        params = [{"name": n, "in": "path", "required": True, "schema": op.params.get(n, TEXT)}
                  for n in re.findall(r"{(\w+)}", op.path)]
        params += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in op.query.items()]
        doc: dict[str, Any] = {"summary": op.summary or op.path, "operationId": f"{op.method.lower()}{op.path}",
                               "parameters": params,
                               "responses": {"200": {"description": "ok", "content": {op.produces: {}}},
                                             "default": error}}
        if op.body is not None:
            doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
        if op.right != "public":
            doc["security"] = [{"bearer": []}, {"basic": []}]
        paths.setdefault(op.path, {})[op.method.lower()] = doc
    return {"openapi": "3.0.3", "info": {"title": title, "version": "1"}, "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                               "basic": {"type": "http", "scheme": "basic"}}}}


# ---------------------------------------------------------------------------------------------- the application


@dataclass(frozen=True)
class Limits:
    body_bytes: int = 16 * 1024 * 1024
    request_s: float = 30.0
    handler_threads: int = 16
    connections: int = 256
    keep_alive_s: int = 5


class App:
    """The ASGI application of one server: its operations, its access rule and its bounds."""

    def __init__(self, title: str, ops: list[Op], access: Access, *, bind_host: str = "127.0.0.1",
                 limits: Limits | None = None, translate: Callable[[Exception], HttpError | None] = lambda e: None,
                 headers: Mapping[str, str] | None = None, media: str = "application/json",
                 log: Callable[[str], None] | None = None, log_all: bool = False) -> None:
        self.ops = [*ops, Op("GET", "/openapi.json", lambda c: self.document, "public", "this document",
                             inline=True)]
        self.document = openapi(title, self.ops)
        self.access = access
        self.loopback_only = is_loopback(bind_host)
        self.limits = limits or Limits()
        self.translate = translate
        self.headers = dict(headers or {})
        self.media = media
        self.title = title
        self.log = log  # failures (every request with log_all), never a query string or a header
        self.log_all = log_all
        self._pool = anyio.CapacityLimiter(self.limits.handler_threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do
        request = Request(scope, receive)
        try:
            with anyio.fail_after(self.limits.request_s):
                response = await self._answer(request)
        except TimeoutError:
            response = self._error(HttpError(503, f"the request took longer than {self.limits.request_s:g} s"))
        if self.log is not None and (self.log_all or response.status_code >= 400):
            client = request.client.host if request.client else "-"
            self.log(f"{self.title}: {client} {request.method} {request.url.path} -> {response.status_code}")
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        try:
            segs = [unquote_to_bytes(s).decode("utf-8", "replace")
                    for s in request.scope.get("raw_path", b"").split(b"?")[0].split(b"/") if s]
            self._check_host(request)
            op, params = _match(self.ops, request.method, segs)
            self._authorize(op, request)
            body = await self._body(op, request)
            call = Call(params, dict(request.query_params), body, request.headers)
            if op.inline:
                result = op.handler(call)
            else:
                result = await anyio.to_thread.run_sync(op.handler, call, limiter=self._pool,
                                                        abandon_on_cancel=True)
        except HttpError as exc:
            return self._error(exc)
        except Exception as exc:
            known = self.translate(exc)
            if known is None:  # a bug: logged once with its traceback, answered in the API's shape
                _LOG.exception("HTTP %s %s failed", request.method, request.url.path)
                known = HttpError(500, f"internal error: {type(exc).__name__}", 50001)
            return self._error(known)
        if isinstance(result, Response):
            result.headers.update(self.headers)
            return result
        return Response(orjson.dumps(result), 200, self.headers, self.media)

    def _check_host(self, request: Request) -> None:
        host = request.headers.get("host")
        if self.loopback_only and host is not None:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name):
                raise HttpError(403, f"Host {host!r} is not this loopback server's name (DNS rebinding?)")

    def _authorize(self, op: Op, request: Request) -> None:
        client = request.client.host if request.client else None
        right, authenticated = self.access.right(request.headers.get("authorization"), client)
        if RIGHTS.index(right) >= RIGHTS.index(op.right):
            return
        if authenticated:
            raise HttpError(403, f"{op.method} {op.path} needs the {op.right} right", 40301)
        raise HttpError(401, "credentials required: HTTP basic auth or a bearer token", 40101)

    async def _body(self, op: Op, request: Request) -> Any:
        if op.body is None:
            return None
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            raise HttpError(415, f"Content-Type must be one of {', '.join(sorted(JSON_TYPES))}, got {ctype!r}")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.body_bytes):
            raise HttpError(413, f"request body of {length} bytes exceeds {self.limits.body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.body_bytes:
                raise HttpError(413, f"request body exceeds {self.limits.body_bytes} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data.strip():
            raise HttpError(400, "a JSON request body is required")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def _error(self, exc: HttpError) -> Response:
        body = {"error_code": exc.code, "message": str(exc), **exc.extra}
        extra = {"WWW-Authenticate": 'Basic realm="streams", Bearer'} if exc.status == 401 else {}
        return Response(orjson.dumps(body), exc.status, {**self.headers, **extra}, self.media)


# ---------------------------------------------------------------------------------------------- the server thread


class _H11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with its idle timeout also on a connection that has sent nothing yet (uvicorn
    starts it only after a first response, so a silent connection held a slot for ever)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


class Server:
    """uvicorn serving an :class:`App` in a thread of its own, on a socket bound in ``start()`` (so a taken port
    fails there, as a ConfigError, and port 0 is known at once)."""

    def __init__(self, app: App | Callable[[Scope, Receive, Send], Awaitable[None]], host: str, port: int,
                 name: str, limits: Limits | None = None) -> None:
        self.app, self.host, self.port_wanted, self.name = app, host, port, name
        self.limits = limits or (app.limits if isinstance(app, App) else Limits())
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    def url(self, host: str | None = None) -> str:
        host = host or self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def bind(self) -> None:
        """Take the port now (``start()`` does if nothing did): a taken port fails here, as a ConfigError."""
        if self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port_wanted))
        except OSError as exc:  # a taken port, an address not on this machine, a name that does not resolve
            sock.close()
            raise ConfigError(f"cannot listen on {self.host}:{self.port_wanted}: {exc.strerror or exc}") from exc
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._sock = sock

    def start(self) -> None:
        self.bind()
        sock, self._sock = self._sock, None
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", http=_H11,
                                timeout_keep_alive=self.limits.keep_alive_s,
                                limit_concurrency=self.limits.connections, timeout_graceful_shutdown=2)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not server.started:
            raise OSError(f"{self.name}: the HTTP server did not start")

    def wait(self) -> None:
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(0.5)

    def stop(self) -> None:
        if self._sock is not None:  # bound, never started
            self._sock.close()
            self._sock = None
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
