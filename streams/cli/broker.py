"""``streams broker``: run the embedded, memory-only Kafka-compatible broker in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from streams.kafka.embedded import EmbeddedBroker


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (memory-only)")
    p.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker listening on {broker.bootstrap} (memory-only: data ends with this process)",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
