"""Topic administration: idempotent creation from a topology, description, and the co-partitioning check."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.config import KafkaSettings
from streams.errors import TopologyError
from streams.kafka.client import make_admin, result, translate
from streams.topology import ProcessorSpec, TopicSpec


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    config: dict[str, str]


class Admin:
    """A thin, typed face over confluent-kafka's AdminClient."""

    def __init__(self, settings: KafkaSettings, client: AdminClient | None = None) -> None:
        self._admin = client or make_admin(settings)

    def partitions(self, topics: Iterable[str], timeout_s: float = 10.0) -> dict[str, int]:
        """Partition counts of the topics that exist (missing ones are left out)."""
        wanted = list(topics)
        try:
            md = self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc, "listing topics") from exc
        return {t: len(md.topics[t].partitions) for t in wanted if t in md.topics and not md.topics[t].error}

    def list_topics(self, timeout_s: float = 10.0) -> dict[str, int]:
        try:
            md = self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc, "listing topics") from exc
        return {t: len(m.partitions) for t, m in md.topics.items() if not m.error}

    def describe(self, names: Iterable[str]) -> list[TopicState]:
        counts = self.partitions(names)
        out: list[TopicState] = []
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in counts]
        configs: dict[str, dict[str, str]] = {}
        if resources:
            for res, fut in self._admin.describe_configs(resources).items():
                try:
                    entries = fut.result(timeout=10)
                except KafkaException:
                    entries = {}  # some brokers answer partially; partition counts still matter most
                configs[res.name] = {k: str(v.value) for k, v in entries.items() if v.value is not None}
        for t, n in counts.items():
            out.append(TopicState(t, n, configs.get(t, {})))
        return out

    def ensure(self, specs: Iterable[TopicSpec]) -> tuple[list[str], list[str]]:
        """Create missing topics; existing ones are left as they are. Returns (created, existing).

        An existing topic with a different partition count is an error, not a silent mismatch.
        """
        specs = list(specs)
        have = self.partitions(s.name for s in specs)
        for s in specs:
            if s.name in have and have[s.name] != s.partitions:
                raise TopologyError(
                    f"topic {s.name} exists with {have[s.name]} partitions, topology says {s.partitions}"
                )
        missing = [s for s in specs if s.name not in have]
        created: list[str] = []
        if missing:
            new = [NewTopic(s.name, s.partitions, s.replication, config=s.kafka_config()) for s in missing]
            for name, fut in self._admin.create_topics(new, operation_timeout=30).items():
                try:
                    fut.result(timeout=30)
                    created.append(name)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue  # a concurrent creator won the race: that is the idempotent outcome
                    raise translate(exc, f"creating topic {name}") from exc
        return created, [s.name for s in specs if s.name in have]

    def delete(self, names: Iterable[str]) -> None:
        for name, fut in self._admin.delete_topics(list(names), operation_timeout=30).items():
            result(fut, f"deleting topic {name}")

    def check_copartitioned(self, proc: ProcessorSpec) -> int:
        """The processor's partition count, or a one-line TopologyError naming the mismatch."""
        wanted = [*proc.inputs, proc.changelog]
        counts = self.partitions(wanted)
        missing = [t for t in wanted if t not in counts]
        if missing:
            raise TopologyError(f"processor {proc.name}: topics missing: {', '.join(missing)} "
                                f"(run `streams topics create`)")
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{t}={counts[t]}" for t in wanted)
            raise TopologyError(f"processor {proc.name}: inputs and changelog are not co-partitioned ({detail})")
        return counts[proc.inputs[0]]
