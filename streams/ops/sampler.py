"""What the dashboard shows, sampled once per tick: consumer lag and throughput from Kafka, latency, stuck
workflows and dead letters from the workers' ``/metrics``, kept in bounded memory and rendered as one JSON snapshot.

Why it reads Kafka itself instead of only scraping workers: lag is a fact about the log and the group's commits,
and it must show while every worker is down (that is when it matters most). Lag comes from
:class:`streams.ops.lag.LagReader` (correct on the embedded broker too); throughput is the change of committed
offsets (consumed) and of log ends (produced) between two samples, so it needs no worker either.

Worker metrics come from the workers themselves: each worker serving HTTP announces its URL on its group's
``<group>.endpoints`` topic (signed and leased, see :class:`streams.ops.endpoints.Endpoints`, whose checks decide which
announcements are believed), and the sampler scrapes every believed one of the groups it watches. ``--worker
URL`` (or ``dns+http://name:port`` for every address a DNS name resolves to, as Docker's service DNS gives for a
scaled service) names them explicitly instead. Counters and gauges are summed over workers;
a p99 comes from the histogram buckets summed over workers, interpolated within a bucket as Prometheus'
``histogram_quantile`` does, both since each worker started and over the last :data:`LATENCY_WINDOW_S` (the
change of the buckets, a worker restart counted as a counter reset).

Everything lives in bounded memory: one ring of lag samples, one short ring of histogram scrapes per worker. The
snapshot is serialized once per tick and handed to every request as the same bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streams.config import KafkaSettings, http_url
from streams.errors import ConfigError, StreamsError
from streams.kafka.admin import Admin
from streams.ops.endpoints import Endpoints, endpoints_topic
from streams.ops.lag import GroupLag, LagReader, PartitionLag, UnknownGroupError
from streams.web import Access, bearer, get

LATENCY_WINDOW_S = 60.0
DISCOVERY_EVERY_S = 5.0  # workers renew their announcements every 10 s; a new one shows within this
# Histograms the workers expose, by the short name the page shows.
HISTOGRAMS: Mapping[str, str] = {
    "step": "streams_step_latency_seconds",
    "batch": "streams_batch_seconds",
    "commit": "streams_commit_seconds",
}
Key = tuple[str, ...]
Buckets = dict[float, float]  # upper bound (le) -> cumulative count


# ---------------------------------------------------------------------------------------------- settings, binding


@dataclass(frozen=True)
class DashboardSettings:
    """What the dashboard watches and where it listens; built once by the CLI."""

    host: str = "127.0.0.1"
    port: int = 8088
    groups: tuple[str, ...] = ()  # empty: every group the cluster lists
    topics: tuple[str, ...] = ()  # read by the named groups even before they commit (see LagReader.read)
    workers: tuple[str, ...] = ()  # /metrics URLs, or dns+http://name:port; empty: those the groups announce
    interval_s: float = 2.0
    token: str | None = field(default=None, repr=False)
    history: int = 300  # lag samples kept (300 x 2 s = 10 minutes)
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ConfigError(f"dashboard interval must be > 0 s, got {self.interval_s}")
        if self.history < 2:
            raise ConfigError(f"dashboard history must keep at least 2 samples, got {self.history}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"dashboard port must be within 0..65535, got {self.port}")
        for url in self.workers:  # checked once here, not by the sampler thread at every refresh
            text = url if "://" in url else f"http://{url}"
            http_url(text.replace("dns+http://", "http://", 1), "a --worker URL (or dns+http://name:port)")
        Access(self.token).check_bind(self.host)


# ---------------------------------------------------------------------------------------------- metrics parsing


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated linearly within its bucket as Prometheus does;
    None without observations. A rank in the +Inf bucket answers the highest finite bound."""
    ordered = sorted(buckets.items())
    if not ordered or not math.isinf(ordered[-1][0]) or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = (ordered[0][0], 0.0) if ordered[0][0] <= 0 else (0.0, 0.0)
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass(frozen=True)
class Scrape:
    """One worker's metrics: plain samples by (name, sorted labels) and histogram buckets by (metric, group)."""

    samples: Mapping[str, Sequence[tuple[Mapping[str, str], float]]]
    histograms: Mapping[tuple[str, str], Buckets]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        hists: dict[tuple[str, str], Buckets] = {}
        wanted = {f"{name}_bucket": name for name in HISTOGRAMS.values()}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                metric = wanted.get(s.name)
                if metric is not None:
                    le = float(s.labels["le"])
                    b = hists.setdefault((metric, s.labels.get("group", "")), {})
                    b[le] = b.get(le, 0.0) + s.value  # a worker exposing several series per group: add them
                else:
                    samples.setdefault(s.name, []).append((s.labels, s.value))
        return cls(samples, hists)

    def sum_by(self, name: str, labels: Sequence[str]) -> dict[Key, float]:
        out: dict[Key, float] = {}
        for lbls, value in self.samples.get(name, ()):
            key = tuple(lbls.get(label, "") for label in labels)
            out[key] = out.get(key, 0.0) + value
        return out


def _sum_buckets(parts: Iterable[Buckets]) -> Buckets:
    """Bucket-wise sum; only bounds every part has, so the sum stays a cumulative histogram."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    common = set(parts[0]).intersection(*parts[1:])
    return {le: sum(p[le] for p in parts) for le in common}


def _delta(now: Buckets, then: Buckets) -> Buckets:
    """Observations between two scrapes of one worker; a count that went down means it restarted (a reset)."""
    if any(now.get(le, 0.0) < c for le, c in then.items()):
        return dict(now)
    return {le: c - then.get(le, 0.0) for le, c in now.items()}


def expand_worker(url: str) -> list[tuple[str, str]]:
    """(label, metrics URL) pairs for one ``--worker`` value: a URL (``/metrics`` added when it has no path),
    ``host:port``, or ``dns+http://name:port`` for every IPv4 address the name resolves to right now."""
    text = url if "://" in url else f"http://{url}"
    parts = urllib.parse.urlsplit(text)
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    if parts.scheme == "dns+http":
        host, port = parts.hostname or "", parts.port or 80
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return [(url, "")]  # unresolvable now (e.g. scaled to zero): shown as down
        ips = sorted({str(info[4][0]) for info in infos})
        return [(f"{host} ({ip})", f"http://{ip}:{port}{path}") for ip in ips]
    return [(url, urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))]


def fetch_metrics(url: str, token: str | None, timeout_s: float) -> str:
    """The text of one ``/metrics`` endpoint; any failure becomes a short StreamsError naming the URL."""
    if not url:
        raise StreamsError("name does not resolve")
    try:
        status, body = get(url, timeout_s, {"Accept": "text/plain", **bearer(token)})
    except (OSError, ValueError) as exc:
        raise StreamsError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
    if not 200 <= status < 300:
        raise StreamsError(f"HTTP {status} from {url}")
    return body.decode("utf-8", errors="replace")


class Discovery:
    """The HTTP workers of some groups, from their announcements on ``<group>.endpoints``: read at most every
    :data:`DISCOVERY_EVERY_S`, each checked by :class:`~streams.ops.endpoints.Endpoints` as a status query's owner
    is (signature from the group's token, or loopback only without one; the lease). A group whose topic cannot be
    read keeps its last answer, and the failure is shown (``error``)."""

    def __init__(self, kafka: KafkaSettings, token: str | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kafka = kafka
        self._token = token
        self._clock = clock
        self._admin: Admin | None = None
        self._endpoints: dict[str, Endpoints] = {}
        self._found: dict[str, list[str]] = {}
        self._at: float | None = None
        self.error: str | None = None

    def urls(self, groups: Sequence[str]) -> list[str]:
        """The base URLs the groups' workers announce now (sorted, each once)."""
        if self._at is None or self._clock() - self._at >= DISCOVERY_EVERY_S:
            self._at = self._clock()
            self._refresh(groups)
        return sorted({u for g in groups for u in self._found.get(g, ())})

    def _refresh(self, groups: Sequence[str]) -> None:
        errors = []
        try:
            self._admin = self._admin or Admin(self._kafka)
            topics = self._admin.partitions([endpoints_topic(g).name for g in groups], timeout_s=5.0)
        except StreamsError as exc:
            self.error = f"cannot list the endpoints topics: {exc}"
            return
        for group in groups:
            topic = endpoints_topic(group).name
            if topic not in topics:  # no worker of this group serves HTTP (yet)
                self._found[group] = []
                continue
            ep = self._endpoints.get(group)
            if ep is None:
                ep = self._endpoints[group] = Endpoints(self._kafka, topic, self._token)
            try:
                self._found[group] = [ann["url"] for ann in ep.announced().values()]
            except StreamsError as exc:
                errors.append(f"{topic}: {exc}")
        self.error = "; ".join(errors) or None


# ---------------------------------------------------------------------------------------------- the sampler


@dataclass(frozen=True)
class _LagSample:
    t: float
    rows: Mapping[tuple[str, str, int], PartitionLag]


@dataclass
class _Worker:
    label: str
    up: bool = False
    error: str | None = None
    scraped_at: float | None = None
    scrape: Scrape | None = None
    # (time, histograms) of recent scrapes, for the windowed p99; trimmed to a little over the window.
    past: deque[tuple[float, Mapping[tuple[str, str], Buckets]]] = field(default_factory=deque)


class Sampler:
    """Reads lag and worker metrics once per tick and keeps the bounded history the page draws.

    ``fetch`` is the test seam for worker scrapes (url, timeout) -> text; ``clock`` gives epoch seconds.
    """

    def __init__(
        self, settings: DashboardSettings, kafka: KafkaSettings, *, worker_token: str | None = None,
        reader: LagReader | None = None, fetch: Callable[[str, float], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._reader = reader
        self._fetch = fetch or (lambda url, timeout: fetch_metrics(url, worker_token, timeout))
        self._clock = clock
        self._lag: deque[_LagSample] = deque(maxlen=settings.history)
        self._lag_error: str | None = None
        self._missing: list[str] = []  # named groups with nothing to show yet
        self._workers: dict[str, _Worker] = {}
        self._discovery = None if settings.workers else Discovery(kafka, settings.token)
        self._seq = 0
        self._lock = threading.Lock()
        self._body = self._render()

    # -- one tick

    def tick(self) -> None:
        """Sample lag and scrape every worker; errors are kept for the page, never raised."""
        self._sample_lag()
        self._scrape_workers()
        body = self._render()
        with self._lock:
            self._body = body

    @property
    def lag_error(self) -> str | None:
        """Why the last tick could not read lag, or None."""
        return self._lag_error

    def snapshot_bytes(self) -> bytes:
        with self._lock:
            return self._body

    def snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.snapshot_bytes())
        return result

    def _sample_lag(self) -> None:
        now = self._clock()
        try:
            if self._reader is None:
                self._reader = LagReader(self._kafka, timeout_s=self._settings.timeout_s)
            groups: list[GroupLag] = []
            missing: list[str] = []
            if not self._settings.groups:
                groups = self._reader.read(None, self._settings.topics)
            for name in self._settings.groups:
                try:
                    groups.extend(self._reader.read(name, self._settings.topics))
                except UnknownGroupError:
                    missing.append(name)
        except StreamsError as exc:
            self._lag_error = f"{type(exc).__name__}: {exc}"
            return
        self._lag_error = None
        self._missing = missing
        self._lag.append(_LagSample(now, {(p.group, p.topic, p.partition): p for g in groups for p in g.partitions}))

    def _targets(self) -> list[tuple[str, str]]:
        if self._discovery is None:
            return [pair for url in self._settings.workers for pair in expand_worker(url)]
        latest = self._lag[-1].rows if self._lag else {}
        groups = self._settings.groups or sorted({g for g, _t, _p in latest})
        return [(url, f"{url.rstrip('/')}/metrics") for url in self._discovery.urls(groups)]

    def _scrape_workers(self) -> None:
        targets = self._targets()
        if not targets:
            self._workers.clear()
            return
        timeout = min(self._settings.timeout_s, max(1.0, self._settings.interval_s))

        def one(target: tuple[str, str]) -> tuple[str, str, Scrape | str]:
            label, url = target
            try:
                return label, url, Scrape.parse(self._fetch(url, timeout))
            except StreamsError as exc:
                return label, url, str(exc)
            except (ValueError, KeyError, IndexError) as exc:  # the parser's complaints about a malformed text
                return label, url, f"unparsable metrics from {url}: {exc}"

        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            results = list(pool.map(one, targets))
        now = self._clock()
        seen = set()
        for label, url, res in results:
            key = url or label
            seen.add(key)
            w = self._workers.setdefault(key, _Worker(label))
            if isinstance(res, str):
                w.up, w.error = False, res
                continue
            w.up, w.error, w.scraped_at, w.scrape = True, None, now, res
            w.past.append((now, res.histograms))
            while len(w.past) > 2 and w.past[1][0] <= now - LATENCY_WINDOW_S:
                w.past.popleft()
        for gone in set(self._workers) - seen:  # a DNS name that no longer resolves to it
            del self._workers[gone]

    # -- the snapshot

    def _render(self) -> bytes:
        self._seq += 1
        live = [w.scrape for w in self._workers.values() if w.up and w.scrape is not None]
        snap = {
            "seq": self._seq,
            "generated_at": self._clock(),
            "interval_s": self._settings.interval_s,
            "bootstrap": self._kafka.bootstrap_servers,
            "lag_error": self._lag_error,
            "workers_from": "--worker" if self._discovery is None else "announcements",
            "discovery_error": self._discovery.error if self._discovery is not None else None,
            "missing_groups": self._missing,
            **self._lag_view(),
            "workers": [{"url": w.label, "up": w.up, "error": w.error, "scraped_at": w.scraped_at}
                        for w in self._workers.values()],
            "latency": self._latency_view(),
            "workflows": _rows(("group", "workflow", "state"), {
                "count": _sum_scrapes(live, "streams_workflows", ("group", "workflow", "state")),
                "stuck": _sum_scrapes(live, "streams_workflows_stuck", ("group", "workflow", "state")),
            }),
            "dead_letters": _rows(("group", "reason"), {
                "count": _sum_scrapes(live, "streams_dead_letters_total", ("group", "reason"))}),
            "timers": _rows(("group",), {
                "pending": _sum_scrapes(live, "streams_timers_pending", ("group",)),
                "fired": _sum_scrapes(live, "streams_timers_fired_total", ("group",))}),
            "restores": _rows(("group", "store"), {
                "remaining": _sum_scrapes(live, "streams_restore_remaining", ("group", "store")),
                "restored": _sum_scrapes(live, "streams_restore_records_total", ("group", "store"))}),
        }
        return json.dumps(snap, separators=(",", ":"), allow_nan=False).encode()

    def _lag_view(self) -> dict[str, Any]:
        samples = list(self._lag)
        latest = samples[-1].rows if samples else {}
        keys = sorted(latest)
        groups = sorted({k[0] for k in keys} | set(self._missing))
        rates = [_rates(a, b) for a, b in itertools.pairwise(samples)]
        now_rates = rates[-1] if rates else {}
        return {
            "lag": [{"group": p.group, "topic": p.topic, "partition": p.partition, "committed": p.committed,
                     "log_start": p.log_start, "log_end": p.log_end, "lag": p.lag} for p in (latest[k] for k in keys)],
            "groups": [{"group": g, "total_lag": sum(latest[k].lag for k in keys if k[0] == g),
                        "consumed_per_s": now_rates.get(g, (None, None))[0],
                        "produced_per_s": now_rates.get(g, (None, None))[1]} for g in groups],
            "history": {
                "t": [s.t for s in samples],
                "lag": [{"group": g, "topic": t, "partition": p,
                         "values": [s.rows[(g, t, p)].lag if (g, t, p) in s.rows else None for s in samples]}
                        for g, t, p in keys],
                # rates[i] is between samples i and i+1: aligned with t[1:]
                "throughput": [{"group": g,
                                "consumed": [r.get(g, (None, None))[0] for r in rates],
                                "produced": [r.get(g, (None, None))[1] for r in rates]} for g in groups],
            },
        }

    def _latency_view(self) -> list[dict[str, Any]]:
        totals: dict[tuple[str, str], list[Buckets]] = {}
        windows: dict[tuple[str, str], list[Buckets]] = {}
        for w in self._workers.values():
            if not (w.up and w.scrape):
                continue
            base = w.past[0][1] if len(w.past) > 1 else None
            for key, buckets in w.scrape.histograms.items():
                totals.setdefault(key, []).append(buckets)
                if base is not None:
                    windows.setdefault(key, []).append(_delta(buckets, base.get(key, {})))
        out = []
        short = {v: k for k, v in HISTOGRAMS.items()}
        for metric, group in sorted(totals, key=lambda k: (k[1], list(HISTOGRAMS.values()).index(k[0]))):
            total = _sum_buckets(totals[(metric, group)])
            window = _sum_buckets(windows.get((metric, group), []))
            out.append({
                "group": group, "metric": short[metric],
                "p99_total_s": histogram_quantile(0.99, total), "count_total": _count(total),
                "p99_window_s": histogram_quantile(0.99, window), "count_window": _count(window),
                "window_s": LATENCY_WINDOW_S,
            })
        return out


def _count(buckets: Buckets) -> int:
    return int(buckets.get(math.inf, 0.0))


def _sum_scrapes(scrapes: Iterable[Scrape], name: str, labels: Sequence[str]) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for s in scrapes:
        for key, value in s.sum_by(name, labels).items():
            out[key] = out.get(key, 0.0) + value
    return out


def _rows(labels: Sequence[str], columns: Mapping[str, Mapping[Key, float]]) -> list[dict[str, Any]]:
    """One row per label combination found in any column; a gauge absent from a column is 0 there."""
    keys = sorted({k for col in columns.values() for k in col})
    return [{**dict(zip(labels, k, strict=True)),
             **{name: _num(col.get(k, 0.0)) for name, col in columns.items()}} for k in keys]


def _num(v: float) -> float | int:
    return int(v) if v.is_integer() else v


def _rates(a: _LagSample, b: _LagSample) -> dict[str, tuple[float | None, float]]:
    """Per group, records/s consumed (committed offsets moving) and produced (log ends moving) from a to b.
    A partition whose offsets went backwards (topic recreated) contributes 0 rather than a negative rate."""
    dt = b.t - a.t
    if dt <= 0:
        return {}
    consumed: dict[str, float] = {}
    known: dict[str, bool] = {}
    produced: dict[str, float] = {}
    for key, now in b.rows.items():
        g = key[0]
        then = a.rows.get(key)
        if then is None:
            continue
        produced[g] = produced.get(g, 0.0) + max(0, now.log_end - then.log_end)
        if now.committed is not None and then.committed is not None:
            consumed[g] = consumed.get(g, 0.0) + max(0, now.committed - then.committed)
            known[g] = True
        elif now.committed is not None:  # first commit since the last sample: from where it could start
            consumed[g] = consumed.get(g, 0.0) + max(0, now.committed - then.log_start)
            known[g] = True
    return {g: (consumed[g] / dt if known.get(g) else None, produced[g] / dt) for g in produced}
