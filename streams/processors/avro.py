"""Avro wiring shared by the workflow adapter and the reference services: one Serde per process."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streams.contracts import Catalogue, RegistryClient, RegistrySettings, Serde
from streams.records import InputRecord

# The order-saga example's contracts (package data), the default for a topology that names none.
EXAMPLE_SCHEMAS = ("streams.examples.orders", "schemas")


def default_schemas() -> Path:
    """The example's schema directory, wherever the package is installed (found by name, imported on use)."""
    package, name = EXAMPLE_SCHEMAS
    return Path(str(importlib.resources.files(package).joinpath(name)))


def make_serde(options: Mapping[str, Any]) -> Serde:
    """A serde for the schemas directory in ``options`` (the topology's ``schemas:``; default: the order-saga
    example's, :func:`default_schemas`) and the registry
    in ``SCHEMA_REGISTRY_URL``; subject strategy from ``options['subject_strategy']`` (default topic).
    ``options['schema_overrides']`` lists ``.avsc`` files that replace the live schema of the same name: how a
    worker built against a newer (or older) contract reads and writes during a rolling upgrade."""
    catalogue = Catalogue.load(options.get("schemas") or default_schemas(),
                               overrides=options.get("schema_overrides") or ())
    registry = RegistryClient(RegistrySettings.from_env(options.get("registry")))
    return Serde(registry, catalogue, strategy=str(options.get("subject_strategy", "topic")))


def envelope(event_id: str, key: str, record: str, occurred_at: int, causation: str | None) -> dict[str, Any]:
    """The common envelope. ``occurred_at`` comes from the causing input, never the clock, so a record
    produced again after a crash is byte-identical to the first copy."""
    return {
        "id": event_id,
        "entity_key": key,
        "type": record.rsplit(".", 1)[-1],
        "schema_version": 1,
        "occurred_at": occurred_at,
        "correlation_id": key,
        "causation_id": causation,
    }


def envelope_id(serde: Serde, record: InputRecord) -> str | None:
    """The id in ``record``'s envelope, or None: what a record produced without an id header (by a producer
    that knows the contract, not the engine's headers) is deduplicated by."""
    _name, body = serde.decode(record.value)
    env = body.get("envelope")
    eid = env.get("id") if isinstance(env, dict) else None
    return eid if isinstance(eid, str) and eid else None


def key_of(record: InputRecord) -> str:
    return record.key.decode("utf-8", "replace")
