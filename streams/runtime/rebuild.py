"""Rebuild partition stores from the changelog alone: the operator's `state rebuild` and the tests' oracle.

It uses the same :class:`Restorer` a worker does, so "restore equals live" is checked against the real path.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from streams.config import KafkaSettings
from streams.errors import KafkaUnavailableError
from streams.kafka import client
from streams.kafka.client import make_consumer
from streams.kafka.io import TopicPartition
from streams.progress import SILENT, Progress
from streams.runtime.restore import Restorer
from streams.state.store import PartitionStore, store_path


def committed_offsets(
    kafka: KafkaSettings, group: str, topics: Iterable[str], partitions: Iterable[int]
) -> dict[tuple[str, int], int]:
    """The group's committed offsets (-1 where none); reading them does not join the group."""
    consumer = make_consumer(kafka, group)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in partitions]
        return client.committed_offsets(consumer, tps, f"reading committed offsets of group {group}")
    finally:
        consumer.close()


def rebuild(
    kafka: KafkaSettings,
    group: str,
    inputs: list[str],
    changelog: str,
    store: str,
    partitions: Iterable[int],
    state_dir: Path,
    log: Callable[[str], None] = lambda _m: None,
    timeout_s: float = 600.0,
    progress: Progress = SILENT,
    hashes: bool = True,
) -> dict[int, str]:
    """Restore each partition's store from scratch into ``state_dir``; returns the state hash per partition
    (``hashes=False``: an empty dict, for callers that time the restore alone; hashing 500,000 entities
    costs a third as much as restoring them)."""
    parts = sorted(set(partitions))
    committed = committed_offsets(kafka, group, inputs, parts)
    restorer = Restorer(kafka, f"{group}.rebuild", changelog, 10000, log)
    stores: dict[int, PartitionStore] = {}
    try:
        for p in parts:
            path = store_path(state_dir, store, p)
            if path.exists():
                shutil.rmtree(path)
            stores[p] = PartitionStore(path, p)
            durable = {t: max(committed.get((t, p), -1), 0) for t in inputs}
            restorer.start(stores[p], durable, durable)
        deadline = time.monotonic() + timeout_s
        jobs = dict(restorer.jobs)  # the restorer drops a job when it is done; its final position stays here
        first = {p: j.position for p, j in jobs.items()}
        progress.phase(f"restoring {changelog} ({len(parts)} partitions)")
        while restorer.jobs:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(f"rebuild of {changelog} did not finish within {timeout_s}s")
            restorer.step(0.2)
            left = restorer.remaining()
            done = sum(j.position - first[p] for p, j in jobs.items())
            progress.advance(done, done + sum(left.values()))
        progress.end()
        return {p: s.state_hash() for p, s in stores.items()} if hashes else {}
    finally:
        restorer.close()
        for s in stores.values():
            s.close()
