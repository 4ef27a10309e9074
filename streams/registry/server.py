"""``RegistryServer``: the Confluent-compatible schema registry, startable in-process on any port.

Storage is a log (``streams.registry.log``): the compacted ``_schemas`` topic given Kafka settings, or memory.
On start the server reads the log from the beginning up to a barrier it writes itself, so ids, versions and
configs come back exactly as they were, and several instances on one topic agree (see ``model``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from types import TracebackType

from streams.config import KafkaSettings
from streams.errors import ConfigError
from streams.registry.log import KafkaSchemaLog, MemorySchemaLog, SchemaLog
from streams.registry.rest import CONTENT_TYPE, operations, translate
from streams.registry.service import RegistryService
from streams.runtime.heartbeat import health
from streams.web import Access, App, Op, Server, json_answer

DEFAULT_TOPIC = "_schemas"


class RegistryServer:
    """``with RegistryServer(kafka_settings) as reg: reg.url`` — or ``start()`` / ``stop()``.

    ``port=0`` picks a free port; ``topic`` isolates registries sharing one cluster (tests, tenants). Clients on
    this machine need no credentials; any other needs ``token`` (bearer, every right) or one of ``users``
    (basic auth, name -> (password, ``read``|``write``|``admin``)), and binding beyond loopback needs one of them.
    """

    def __init__(self, store: KafkaSettings | SchemaLog | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 topic: str = DEFAULT_TOPIC, access_log: bool = False,
                 logger: Callable[[str], None] | None = None, token: str | None = None,
                 users: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.access = Access(token, dict(users or {}), loopback_free=True)
        self.access.check_bind(host)
        if store is None:
            store = MemorySchemaLog()
        elif isinstance(store, KafkaSettings):
            store = KafkaSchemaLog(store, topic, logger=logger)
        self.log: SchemaLog = store
        self.host = host
        self.port = port
        self.access_log = access_log
        self.service = RegistryService(self.log)
        beats = store.heartbeats if isinstance(store, KafkaSchemaLog) else None
        health_op = Op("GET", "/healthz", lambda c: json_answer(*health(beats)), "public",
                       "200 ok, or 503 naming the log reader when it died or is overdue", inline=True)
        app = App("streams schema registry", [*operations(self.service), health_op], self.access, bind_host=host,
                  translate=translate, media=CONTENT_TYPE,
                  log=(logger or partial(print, file=sys.stderr)) if access_log else None, log_all=True)
        self._http = Server(app, host, port, "schema-registry-http")

    @property
    def url(self) -> str:
        if not self._http.running:
            raise RuntimeError("registry server not started")
        return self._http.url("127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else None)

    @property
    def listening(self) -> str:
        """The address it is bound to (``url`` is where a client on this machine reaches it)."""
        return self._http.url()

    def start(self) -> RegistryServer:
        """Replay the log, then listen; returns once both are done (the URL answers immediately)."""
        self.service.open()
        try:
            self._http.start()
        except (OSError, ConfigError):  # the port is taken, or the server did not start
            self.service.close()
            raise
        return self

    def wait(self) -> None:
        """Block until ``stop()`` (from a signal handler or another thread)."""
        self._http.wait()

    def stop(self) -> None:
        self._http.stop()
        self.service.close()

    def __enter__(self) -> RegistryServer:
        return self.start() if not self._http.running else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
