"""Wiring shared by subcommands: where Kafka is, and starting the embedded broker when it is nowhere."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from streams.config import KafkaSettings
from streams.kafka.embedded import EmbeddedBroker


def add_kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")


@contextlib.contextmanager
def kafka_or_embedded(args: argparse.Namespace, quiet: bool = False) -> Iterator[KafkaSettings]:
    """Kafka settings from flags/environment; with neither, an embedded broker for this command's lifetime."""
    bootstrap = getattr(args, "bootstrap", None) or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield KafkaSettings.from_env(bootstrap)
        return
    with EmbeddedBroker() as broker:
        if not quiet:
            print(f"streams: started embedded broker on {broker.bootstrap} (memory-only)", file=sys.stderr)
        yield KafkaSettings.from_env(broker.bootstrap)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
