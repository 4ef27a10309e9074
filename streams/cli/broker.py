"""``streams broker``: run the embedded, memory-only Kafka-compatible broker in the foreground."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Annotated

import typer

from streams.cli.common import RUN, app, examples
from streams.kafka.embedded import EmbeddedBroker


@app.command(rich_help_panel=RUN, epilog=examples("streams broker --port 9092"))
def broker(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 9092) -> int:
    """Run the embedded Kafka-compatible broker (memory-only)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=port) as embedded:
        print(f"embedded broker listening on {embedded.bootstrap} (memory-only: data ends with this process)",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
