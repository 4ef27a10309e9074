"""The Kafka ACLs one worker of a topology needs, derived from the topology alone (pure: no I/O).

What each grant is for follows what the worker actually does (streams/cli/worker.py and the runtime):
- inputs: consumed in its group (Read); a record on the wrong partition is re-routed by producing it to the
  right partition of the same input (Write) unless the topology dead-letters misrouted records instead.
- outputs and the dead-letter topic: produced to (Write).
- changelog: written as state changes, read back on restore (Read, Write).
- every topic it touches: Describe, because metadata hides topics a principal cannot describe and the worker
  checks partition counts (co-partitioning) through metadata.
- its consumer group (Read: join, fetch and commit offsets; Describe); the restore consumer carries
  ``<group>.restore`` as its group id and librdkafka looks up that group's coordinator although the consumer
  never joins or commits (FindCoordinator needs Describe, and its refusal is logged on every restore).
- exactly_once: its transactional ids ``<group>.<instance>`` (a prefixed TransactionalId grant, Write and
  Describe) and IdempotentWrite on the cluster.
- creating topics: at start the worker creates every missing topic of the whole topology, so it needs Create
  and Describe on each; ``--no-create-topics`` (topics made beforehand by an operator) drops that need.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from streams.topology import ProcessorSpec, Topology

TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER = "topic", "group", "transactional-id", "cluster"
LITERAL, PREFIXED = "literal", "prefixed"
CLUSTER_NAME = "kafka-cluster"  # the one name Kafka gives the cluster resource


@dataclass(frozen=True, order=True)
class Grant:
    """One allow-ACL: ``operation`` on the resource ``(resource, name, pattern)`` for a principal."""

    resource: str  # TOPIC, GROUP, TRANSACTIONAL_ID or CLUSTER
    name: str
    operation: str  # Kafka's operation name: Read, Write, Create, Describe, IdempotentWrite
    pattern: str = LITERAL


def worker_grants(topo: Topology, proc: ProcessorSpec, group: str | None = None, *, exactly_once: bool | None = None,
                  http: bool = False, create_topics: bool = True) -> list[Grant]:
    """Every allow-ACL one worker of ``proc`` needs, sorted and without duplicates.

    ``exactly_once`` None: as the topology says (the worker's own flag can override it, so can this).
    ``http``: the worker serves HTTP (``--http-port``), so it announces itself on ``<group>.endpoints``.
    """
    group = group or topo.default_group(proc)
    eos = proc.processing_guarantee == "exactly_once" if exactly_once is None else exactly_once
    out: set[Grant] = set()

    def topic(name: str, *ops: str) -> None:
        out.update(Grant(TOPIC, name, op) for op in (*ops, "Describe"))

    topic_ops_in = ("Read", "Write") if topo.misrouted == "reroute" else ("Read",)
    for name in proc.inputs:
        topic(name, *topic_ops_in)
    for name in proc.outputs:
        topic(name, "Write")
    topic(proc.changelog, "Read", "Write")
    topic(topo.dlq_topic, "Write")
    if http:
        topic(f"{group}.endpoints", "Read", "Write", *(("Create",) if create_topics else ()))
    if create_topics:
        for spec in topo.all_topics():
            topic(spec.name, "Create")
    out.update((Grant(GROUP, group, "Read"), Grant(GROUP, group, "Describe"),
                Grant(GROUP, f"{group}.restore", "Describe")))
    if eos:
        out.update((Grant(TRANSACTIONAL_ID, group, "Write", PREFIXED),
                    Grant(TRANSACTIONAL_ID, group, "Describe", PREFIXED),
                    Grant(CLUSTER, CLUSTER_NAME, "IdempotentWrite")))
    return sorted(out)


_FLAG = {TOPIC: "--topic", GROUP: "--group", TRANSACTIONAL_ID: "--transactional-id", CLUSTER: "--cluster"}


def kafka_acls_commands(grants: list[Grant], principal: str, bootstrap: str = "BOOTSTRAP") -> list[str]:
    """The grants as ``kafka-acls.sh`` command lines, one per resource (its operations grouped)."""
    by_resource: dict[tuple[str, str, str], list[str]] = {}
    for g in grants:
        by_resource.setdefault((g.resource, g.name, g.pattern), []).append(g.operation)
    lines = []
    for (resource, name, pattern), ops in sorted(by_resource.items()):
        args = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--add", "--allow-principal", principal]
        for op in ops:
            args += ["--operation", op]
        args += [_FLAG[resource]] if resource == CLUSTER else [_FLAG[resource], name]
        if pattern != LITERAL:
            args += ["--resource-pattern-type", pattern]
        lines.append(shlex.join(args))
    return lines
