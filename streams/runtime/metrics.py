"""Prometheus metrics of one worker, in a registry of its own (several workers may share a test process).

The hot path keeps plain integers; :meth:`Metrics.sync` moves them into the Prometheus objects once per commit,
so a record costs a dict increment, not a locked counter update. Names follow Prometheus conventions and are
what the dashboard, the Grafana JSON and the docs refer to.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, group: str) -> None:
        self.group = group
        r = self.registry = CollectorRegistry()
        g = ["group"]
        self.records_in = Counter("streams_records_in", "Records consumed", [*g, "topic"], registry=r)
        self.records_out = Counter("streams_records_out", "Records produced", [*g, "topic"], registry=r)
        self.lag = Gauge("streams_consumer_lag", "Records behind the log end", [*g, "topic", "partition"],
                         registry=r)
        self.batch = Histogram("streams_batch_seconds", "Processing time of one consumed batch", g,
                               buckets=_LATENCY, registry=r)
        self.commit = Histogram("streams_commit_seconds", "Duration of the commit protocol", g,
                                buckets=_LATENCY, registry=r)
        self.step_latency = Histogram("streams_step_latency_seconds",
                                      "Input event timestamp to its outputs produced (sampled)", g,
                                      buckets=_LATENCY, registry=r)
        self.retries = Counter("streams_retries", "Commands issued again", [*g, "workflow", "command"], registry=r)
        self.dead_letters = Counter("streams_dead_letters", "Records dead-lettered", [*g, "reason"], registry=r)
        self.timers_pending = Gauge("streams_timers_pending", "Durable timers waiting", g, registry=r)
        self.timers_fired = Counter("streams_timers_fired", "Timers fired", g, registry=r)
        self.workflows = Gauge("streams_workflows", "Entities by workflow state", [*g, "workflow", "state"],
                               registry=r)
        self.stuck = Gauge("streams_workflows_stuck", "Non-terminal entities past their state's SLA",
                           [*g, "workflow", "state"], registry=r)
        self.restored = Counter("streams_restore_records", "Changelog records restored", [*g, "store"], registry=r)
        self.restore_remaining = Gauge("streams_restore_remaining", "Changelog records left to restore",
                                       [*g, "store", "partition"], registry=r)
        self.rebalances = Counter("streams_rebalances", "Partition assignments and revocations", g, registry=r)
        self.duplicates = Counter("streams_duplicates", "Redelivered records recognised and skipped", g,
                                  registry=r)
        self.pauses = Counter("streams_backpressure_pauses", "Times consumption paused for backpressure", g,
                              registry=r)
        self.misrouted = Counter("streams_misrouted", "Input records found on another partition than their key's",
                                 [*g, "topic"], registry=r)
        # hot-path tallies, moved into the counters by sync()
        self.in_by_topic: Tally[str] = Tally()
        self.out_by_topic: Tally[str] = Tally()
        self.dead_by_reason: Tally[str] = Tally()
        self.misrouted_by_topic: Tally[str] = Tally()
        self.retry_by_command: Tally[tuple[str, str]] = Tally()
        self._workflow_labels: set[tuple[str, str]] = set()

    def sync(self) -> None:
        for tally, metric in ((self.in_by_topic, self.records_in), (self.out_by_topic, self.records_out),
                              (self.dead_by_reason, self.dead_letters),
                              (self.misrouted_by_topic, self.misrouted)):
            for label, n in tally.items():
                metric.labels(self.group, label).inc(n)
            tally.clear()
        for (workflow, command), n in self.retry_by_command.items():
            self.retries.labels(self.group, workflow, command).inc(n)
        self.retry_by_command.clear()

    def set_workflows(self, counts: dict[tuple[str, str], int], stuck: dict[tuple[str, str], int]) -> None:
        """Publish a full pass over the stores; states seen before and now absent drop to zero."""
        for key in self._workflow_labels - counts.keys():
            self.workflows.labels(self.group, *key).set(0)
            self.stuck.labels(self.group, *key).set(0)
        for key, n in counts.items():
            self.workflows.labels(self.group, *key).set(n)
            self.stuck.labels(self.group, *key).set(stuck.get(key, 0))
        self._workflow_labels = set(counts)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
