"""Topic administration: idempotent creation from a topology, description, and the co-partitioning check."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.config import KafkaSettings
from streams.errors import ConfigError, KafkaUnavailableError, TopologyError
from streams.kafka.client import make_admin, result, translate
from streams.progress import SILENT, Progress
from streams.topology import ProcessorSpec, TopicSpec


def check_reachable(settings: KafkaSettings, timeout_s: float = 3.0) -> None:
    """Raise KafkaUnavailableError unless some bootstrap server accepts a TCP connection within ``timeout_s``.

    librdkafka retries an unreachable broker until each request's own timeout (10-30 s) and then says only
    "transport failure"; a command that does one thing and exits asks this first, to fail in a moment and say
    why (refused, unresolvable, no answer).
    """
    problems = []
    for server in (s.strip() for s in settings.bootstrap_servers.split(",")):
        address = server.rpartition("://")[2]
        if address.startswith("["):  # [IPv6]:port
            host, _, port = address[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = address.partition(":") if address.count(":") == 1 else (address, "", "")
        if port and not port.isdigit():
            raise ConfigError(f"bootstrap server {server!r}: the port is not a number")
        try:
            socket.create_connection((host, int(port or 9092)), timeout_s).close()
            return
        except OSError as exc:
            problems.append(f"{server}: {exc.strerror or exc}")
    raise KafkaUnavailableError(f"cannot connect to Kafka ({'; '.join(problems)})")


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

    def unready(self, topics: Iterable[str] | None = None, timeout_s: float = 10.0) -> list[str]:
        """Partitions (``topic[p]``) of ``topics`` (default: all) that have no leader yet or fewer in-sync
        replicas than replicas, as the metadata shows them now: a topic just created, or a broker catching up."""
        try:
            md = self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc, "listing topics") from exc
        names = md.topics if topics is None else list(topics)
        out: list[str] = []
        for t in names:
            meta = md.topics.get(t)
            if meta is None or meta.error is not None:
                out.append(f"{t}[*]")
                continue
            out += [f"{t}[{p}]" for p, pm in sorted(meta.partitions.items())
                    if pm.error is not None or pm.leader < 0 or len(pm.isrs) < len(pm.replicas)]
        return out

    def describe(self, names: Iterable[str]) -> list[TopicState]:
        counts = self.partitions(names)
        out: list[TopicState] = []
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in counts]
        configs: dict[str, dict[str, str]] = {}
        if resources:
            for res, fut in self._admin.describe_configs(resources).items():
                try:
                    entries = fut.result(timeout=10)
                except (KafkaException, TimeoutError):
                    entries = {}  # some brokers answer partially; partition counts still matter most
                configs[res.name] = {k: str(v.value) for k, v in entries.items() if v.value is not None}
        for t, n in counts.items():
            out.append(TopicState(t, n, configs.get(t, {})))
        return out

    def ensure(self, specs: Iterable[TopicSpec], progress: Progress = SILENT) -> tuple[list[str], list[str]]:
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
            progress.phase(f"creating {len(new)} topics ({len(have)} exist)", len(new))
            for i, (name, fut) in enumerate(self._admin.create_topics(new, operation_timeout=30).items(), 1):
                try:
                    fut.result(timeout=30)
                    created.append(name)
                    progress.advance(i)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue  # a concurrent creator won the race: that is the idempotent outcome
                    raise translate(exc, f"creating topic {name}") from exc
                except TimeoutError as exc:
                    raise KafkaUnavailableError(f"creating topic {name}: no answer from Kafka within 30s") from exc
        if created:
            progress.phase(f"waiting for the leaders of {len(created)} new topics")
            self._wait_leaders(created)
        progress.end()
        return created, [s.name for s in specs if s.name in have]

    def _wait_leaders(self, topics: list[str], timeout_s: float = 30.0) -> None:
        """Until every partition of ``topics`` has a leader in the metadata: Kafka answers CreateTopics before
        its brokers know the topics, so a request right after it can find them missing or leaderless."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                md = self._admin.list_topics(timeout=5)
                missing = [t for t in topics if t not in md.topics or md.topics[t].error is not None
                           or any(p.leader < 0 for p in md.topics[t].partitions.values())]
            except KafkaException:
                missing = topics
            if not missing or time.monotonic() > deadline:
                return  # late ones: the caller's own request reports them, as it would have without the wait
            time.sleep(0.1)

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
