"""``RegistryServer``: the Confluent-compatible schema registry, startable in-process on any port.

Storage is a log (``streams.contracts.log``): the compacted ``_schemas`` topic given Kafka settings, or memory.
On start the server reads the log from the beginning up to a barrier it writes itself, so ids, versions and
configs come back exactly as they were, and several instances on one topic agree (see ``model``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from streams.config import KafkaSettings
from streams.contracts.log import KafkaSchemaLog, MemorySchemaLog, SchemaLog
from streams.contracts.rest import RegistryHTTPServer
from streams.contracts.service import RegistryService

DEFAULT_TOPIC = "_schemas"


class RegistryServer:
    """``with RegistryServer(kafka_settings) as reg: reg.url`` — or ``start()`` / ``stop()``.

    ``port=0`` picks a free port; ``topic`` isolates registries sharing one cluster (tests, tenants).
    """

    def __init__(self, store: KafkaSettings | SchemaLog | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 topic: str = DEFAULT_TOPIC, access_log: bool = False,
                 logger: Callable[[str], None] | None = None) -> None:
        if store is None:
            store = MemorySchemaLog()
        elif isinstance(store, KafkaSettings):
            store = KafkaSchemaLog(store, topic, logger=logger)
        self.log: SchemaLog = store
        self.host = host
        self.port = port
        self.access_log = access_log
        self.service = RegistryService(self.log)
        self._httpd: RegistryHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("registry server not started")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self._httpd.server_address[1]}"

    def start(self) -> RegistryServer:
        """Replay the log, then listen; returns once both are done (the URL answers immediately)."""
        self.service.open()
        try:
            self._httpd = RegistryHTTPServer((self.host, self.port), self.service, self.access_log)
        except OSError:
            self.service.close()
            raise
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="schema-registry-http", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until ``stop()`` (from a signal handler or another thread). Holds its own reference: ``stop()``
        clears ``self._thread`` concurrently."""
        thread = self._thread
        if thread is not None:
            while thread.is_alive():
                thread.join(0.5)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.service.close()

    def __enter__(self) -> RegistryServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
