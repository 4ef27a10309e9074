"""The schema registry server: Confluent's REST API over a compacted ``_schemas`` topic (or memory).

It is a tool beside the engine, not part of it: workers only talk to a registry through
:class:`streams.contracts.RegistryClient`, and nothing in the engine imports this package.

    with RegistryServer(kafka_settings, port=0, topic="_schemas") as registry:
        registry.url                                           # http://127.0.0.1:PORT
"""

from streams.registry.log import KafkaSchemaLog, MemorySchemaLog, SchemaLog
from streams.registry.server import RegistryServer

__all__ = ["KafkaSchemaLog", "MemorySchemaLog", "RegistryServer", "SchemaLog"]
