"""Which worker serves which partition: each worker's signed, leased announcement in its group's compacted
endpoints topic, read by the other workers (to forward a status query to a key's owner) and by the dashboard (to
find the workers to scrape)."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson

from streams.config import KafkaSettings
from streams.errors import KafkaUnavailableError
from streams.kafka.client import read_to_end
from streams.kafka.io import Producer
from streams.runtime.heartbeat import Heartbeats, run_rounds
from streams.topology import TopicSpec
from streams.web import is_loopback

# Invalid announcements already logged, remembered up to this many: a writer spamming bad ones cannot grow a
# reader's memory without bound (past it, the memory starts over and each is logged once more).
_REPORTED_MAX = 1000


def endpoints_topic(group: str) -> TopicSpec:
    """The group's announcement topic. Compacted in ten-minute segments: every worker renews its announcement
    a few times a lease, and each reader reads the whole log, so only the active segment's renewals may pile up
    (Kafka's default segment of a week never becomes compactable in that time)."""
    return TopicSpec(f"{group}.endpoints", 1, 1, "compact",
                     config={"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"})


class Endpoints:
    """Who serves which partition, announced by the workers themselves in a compacted topic.

    An announcement is believed only if it proves it comes from a member: signed with an HMAC keyed by a key
    derived from the group's shared token (without a token, only loopback URLs are believed: the servers of such a
    group are loopback-only), pointing at http(s) on an ``allow_hosts`` host when the operator lists them, and
    leased: it expires :data:`LEASE_S` after it was made, checked on the reader's clock, so it cannot outlive its
    worker, which renews it while it runs. The latest valid announcement in the log wins a partition, not the
    one claiming the latest time. An invalid one is ignored and logged once.
    """

    LEASE_S = 30.0

    def __init__(self, kafka: KafkaSettings, topic: str, token: str | None = None,
                 allow_hosts: tuple[str, ...] = (), log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.kafka = kafka
        self.topic = topic
        self._key = _derive(token, "endpoints", topic)
        self.forward_token = _derive(token, "forward", topic)
        self.allow_hosts = allow_hosts
        self._log = log or (lambda _m: None)
        self._clock = clock
        self._producer: Producer | None = None  # made on the first announcement: readers never produce
        self._cache: tuple[float, dict[int, str]] = (0.0, {})
        self._mine: tuple[str, str, list[int]] | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._reported: set[bytes] = set()
        self.heartbeats = Heartbeats()  # the renewer's; the status server's /healthz reads it

    def announce(self, instance: str, url: str, partitions: list[int]) -> None:
        """Announce (and keep renewing until ``close()``) that ``instance`` serves ``partitions`` at ``url``."""
        self._mine = (instance, url, list(partitions))
        try:
            self._publish()
        except KafkaUnavailableError as exc:  # the renewer tries again; a rebalance must not fail for it
            self._log(f"status: announcing this worker's endpoint: {exc}")
        if self._renewer is None:
            # Overdue once a lease has passed without a renewal: the announcement has then expired.
            self._renewer = run_rounds(self.heartbeats, "endpoints-renewer", self._publish, self.LEASE_S / 3,
                                       self._stop, self._log, overdue_s=self.LEASE_S)

    def close(self) -> None:
        self._stop.set()

    def _publish(self) -> None:
        if self._mine is None:
            return
        instance, url, partitions = self._mine
        ann: dict[str, Any] = {"url": url, "partitions": partitions, "expires": self._clock() + self.LEASE_S}
        ann["sig"] = self._sign(instance, ann)
        if self._producer is None:
            self._producer = Producer({**self.kafka.common(), "enable.idempotence": True})
        self._producer.produce(self.topic, orjson.dumps(ann), instance.encode())
        if self._producer.flush(10):
            raise KafkaUnavailableError(f"announcing on {self.topic}: not acknowledged within 10s")

    def _sign(self, instance: str, ann: dict[str, Any]) -> str:
        text = orjson.dumps([instance, ann.get("url"), ann.get("partitions"), ann.get("expires")])
        return hmac.new(self._key.encode(), text, hashlib.sha256).hexdigest() if self._key else ""

    def owner(self, partition: int, max_age_s: float = 2.0) -> str | None:
        at, owners = self._cache
        if time.monotonic() - at > max_age_s:
            owners = self._read()
            self._cache = (time.monotonic(), owners)
        return owners.get(partition)

    def _read(self) -> dict[int, str]:
        owners: dict[int, str] = {}
        for ann in self.announced().values():
            for p in ann["partitions"]:
                owners[p] = ann["url"]
        return owners

    def announced(self) -> dict[str, dict[str, Any]]:
        """Every announcement believed right now, by instance, in log order: the group's live HTTP workers
        (the dashboard scrapes their ``/metrics``). A topic that cannot be read raises a StreamsError."""
        latest: dict[bytes, bytes] = {}
        for m in read_to_end(self.kafka, self.topic, timeout_s=5):
            if m.key() is not None and m.value():
                latest.pop(m.key(), None)  # re-inserted: the dict keeps log order, the latest last
                latest[m.key()] = m.value()
        believed: dict[str, dict[str, Any]] = {}
        for key, value in latest.items():
            ann, problem = self._check(key, value)
            if problem is not None:
                if (key + value) not in self._reported:
                    if len(self._reported) >= _REPORTED_MAX:
                        self._reported.clear()
                    self._reported.add(key + value)
                    self._log(f"status: ignoring an endpoint announcement in {self.topic} "
                              f"(key {key[:64].decode('utf-8', 'replace')!r}): {problem}")
                continue
            believed[key.decode("utf-8", "replace")] = ann
        return believed

    def _check(self, key: bytes, value: bytes) -> tuple[dict[str, Any], str | None]:
        """(the announcement, why it is not believed, or None)."""
        try:
            ann = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}, "not JSON"
        if not (isinstance(ann, dict) and isinstance(ann.get("url"), str) and isinstance(ann.get("partitions"), list)
                and all(isinstance(p, int) for p in ann["partitions"])
                and isinstance(ann.get("expires"), int | float) and isinstance(ann.get("sig"), str)):
            return {}, "not an announcement {url, partitions, expires, sig}"
        now = self._clock()
        if not now < ann["expires"] <= now + 2 * self.LEASE_S:
            return ann, "its lease is over (or claims more than a lease)"
        parts = urllib.parse.urlsplit(ann["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return ann, "its URL is not http(s)://HOST[:PORT]"
        if self.allow_hosts and parts.hostname not in self.allow_hosts:
            return ann, f"{parts.hostname} is not an allowed host"
        if self._key is None:
            if not is_loopback(parts.hostname):
                return ann, "without a token only loopback endpoints are believed"
        elif not hmac.compare_digest(ann["sig"], self._sign(key.decode("utf-8", "replace"), ann)):
            return ann, "its signature does not match the group's key"
        return ann, None


def _derive(token: str | None, purpose: str, topic: str) -> str | None:
    """A per-group secret for one purpose, derived from the shared token: what it signs or opens cannot be
    turned into the token itself."""
    if not token:
        return None
    return hmac.new(token.encode(), f"streams-{purpose}:{topic}".encode(), hashlib.sha256).hexdigest()
