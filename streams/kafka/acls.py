"""Applying :mod:`streams.ops.acls` grants with confluent-kafka's admin client (tests and tools)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streams.config import KafkaSettings
from streams.kafka.client import make_admin, result, translate

# Keyed by streams.ops.acls' resource names (that module sits above this layer, so it is not imported).
_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional-id": ResourceType.TRANSACTIONAL_ID,
             "cluster": ResourceType.BROKER}  # librdkafka's name for Kafka's cluster resource


class Grant(Protocol):
    """What :class:`streams.ops.acls.Grant` carries."""

    @property
    def resource(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def pattern(self) -> str: ...


def bindings(grants: Sequence[Grant], principal: str, host: str = "*") -> list[AclBinding]:
    """The grants as allow-bindings for ``principal`` (``User:NAME``)."""
    return [AclBinding(_RESOURCE[g.resource], g.name, ResourcePatternType[g.pattern.upper()], principal, host,
                       AclOperation[_snake(g.operation)], AclPermissionType.ALLOW) for g in grants]


def create_acls(settings: KafkaSettings, grants: Sequence[Grant], principal: str) -> None:
    """Grant them (the caller's principal needs Alter on the cluster, e.g. a super user)."""
    admin = make_admin(settings)  # held until every future is done: dropping it cancels them
    try:
        futures = admin.create_acls(bindings(grants, principal))
    except KafkaException as exc:
        raise translate(exc, "creating ACLs") from exc
    for binding, fut in futures.items():
        result(fut, f"creating ACL {binding}")


def _snake(op: str) -> str:
    """Kafka's operation name (IdempotentWrite) as the enum member's (IDEMPOTENT_WRITE)."""
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(op)).upper()
