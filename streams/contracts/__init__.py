"""Contracts: Avro schemas from a schema directory, the Confluent wire format, and a registry client.

Runtime use::

    catalogue = Catalogue.load("schemas")                      # once per process
    serde = Serde(RegistryClient(RegistrySettings.from_env()), catalogue, strategy="topic")
    encode = serde.encoder("orders.events", "OrderPlaced")     # once per (topic, record): registers / looks up
    value = encode(record_dict)                                # per record: header + fastavro
    name, record = serde.decode(value)                         # per record; ids resolved once, cached

``decode`` raises UnknownMagicByteError, UnknownSchemaError or SchemaMismatchError (RecordErrors: dead-letter the
record); an unreachable registry raises SchemaRegistryUnavailableError (retryable: do not dead-letter). ``encode``
raises EncodeError for a record that does not fit its schema. Create encoders at startup: ``encoder()`` registers
(or, with ``auto_register=False``, looks up) the schema, so an incompatible contract fails the deployment with
IncompatibleSchemaError instead of the first record.

Contract conventions (a schema directory: a topology's ``schemas:``; the engine's own records, the envelope,
TimerFired and the generic WorkflowState, are in ``streams/contracts/common/`` and part of every catalogue):

- every event and command carries the common envelope as a nested record, field ``envelope`` of type
  ``streams.common.Envelope`` (id, entity_key, type, schema_version, occurred_at, correlation_id, causation_id);
  trace context travels in the ``traceparent`` header, never in the body;
- ``occurred_at`` is a ``timestamp-millis``; the serde decodes it (and every date/time logical type) as epoch-millis
  ints unless ``Serde(..., logical_types=True)``;
- evolve by adding fields with defaults; FULL(_TRANSITIVE) keeps old and new readers and writers interchangeable,
  which is what rolling upgrades of workers and services need (``streams schemas register --compatibility FULL``);
- ``subjects.yaml`` declares which records travel on which topic; ``evolution/`` holds candidate
  future versions, never live.

The registry server itself is not part of the engine: see :mod:`streams.registry`.
"""

from streams.contracts.catalogue import STRATEGIES, Catalogue, SchemaEntry
from streams.contracts.client import RegisteredSchema, RegistryClient, RegistrySettings
from streams.contracts.compat import LEVELS
from streams.contracts.serde import Encoder, Serde

__all__ = [
    "LEVELS",
    "STRATEGIES",
    "Catalogue",
    "Encoder",
    "RegisteredSchema",
    "RegistryClient",
    "RegistrySettings",
    "SchemaEntry",
    "Serde",
]
