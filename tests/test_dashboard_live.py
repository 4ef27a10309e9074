"""The dashboard beside real workers under load, as ``streams demo`` and ``streams dev`` start it: it finds the
workers through their endpoint announcements (no ``--worker``), the page is driven in headless Chromium by
playwright until every panel shows data, and the Grafana dashboard's queries are checked against what those
workers' ``/metrics`` really export.

The browser is Debian's Chromium (the ``chromium`` fixture; ``scripts/test`` installs it); playwright only drives
it: its own browser download is never used (nothing outside is reachable).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streams.config import KafkaSettings
from streams.ops.dashboard import Dashboard, beside
from streams.records import H_EVENT_ID
from support import LIVE, WorkerProc, browser_page, counter_topology, wait_until

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
GRAFANA_JSON = ROOT / "deploy" / "grafana" / "dashboards" / "streams.json"
ARTIFACTS = ROOT / "build" / "test-artifacts"
PARTITIONS = 4
WORKERS = 2
POISON_EVERY = 50  # one undecodable record in so many: the dead-letter panel has something to show


@dataclass
class Live:
    group: str
    topology: Path
    workers: list[WorkerProc]
    urls: list[str]  # what each worker serves HTTP on (its announced URL)
    dashboard: Dashboard
    said: list[str]
    sent: list[int]


def _load(kafka: KafkaSettings, topic: str, stop: threading.Event, sent: list[int]) -> None:
    """About 400 records/s over 200 keys until told to stop, a few of them poison."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 5, **kafka.client})
    i = 0
    while not stop.wait(0.05):
        for _ in range(20):
            value = b"\xffnot json" if i % POISON_EVERY == 7 else orjson.dumps({"amount": i % 97 + 1})
            producer.produce(topic, value, f"k{i % 200}".encode(), headers=[(H_EVENT_ID, f"ev-{i}".encode())])
            i += 1
        producer.poll(0)
        sent[0] = i
    producer.flush(10)


def _served_url(worker: WorkerProc) -> str | None:
    m = re.search(r"serving /metrics, /healthz and /workflows on (http://\S+)", worker.log_text())
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def live(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dash-live")
    name = f"dashlive{uuid.uuid4().hex[:8]}"
    topo = counter_topology(tmp, name, PARTITIONS, kafka=kafka)
    env = {**os.environ, **kafka.child_env(), "PYTHONPATH": str(ROOT)}
    stop, sent = threading.Event(), [0]
    load = threading.Thread(target=_load, args=(kafka, f"{name}.in", stop, sent), daemon=True)
    load.start()
    workers = [WorkerProc(topo, tmp / f"w{i}", env, tmp / f"w{i}.log",
                          ["--http-port", "0", "--instance-id", f"w{i}"]) for i in range(WORKERS)]
    for w in workers:  # they outlive one test: this fixture stops them, not the per-test orphan guard
        LIVE.remove(w)
    said: list[str] = []
    try:
        wait_until(lambda: all(_served_url(w) for w in workers), 60, "the workers to serve HTTP")
        with beside(kafka, [f"{name}-counter"], said.append, "test", port=0, interval_s=0.5) as dash:
            yield Live(f"{name}-counter", topo, workers, [str(_served_url(w)) for w in workers], dash, said, sent)
    finally:
        stop.set()
        load.join(15)
        for w in workers:
            w.stop()


# Every panel non-empty: true only once the page drew workers, lag (table and a line, so two samples or more),
# throughput (a line and a rate) and a p99 over the last minute from the workers' histograms.
PANELS_FILLED = """(want) => {
  const q = s => document.querySelectorAll(s);
  const up = [...q('#workers-table tr.worker-row td.up')].filter(td => td.textContent === 'up').length;
  const consumed = [...q('#throughput-table tr.group-row td.consumed')].map(td => Number(td.textContent));
  const p99 = [...q('#latency-table tr.latency-row[data-metric="step"] td.p99-window')]
    .filter(td => td.dataset.seconds !== '');
  return document.body.dataset.state === 'ready' && up === want.workers
    && q('#lag-table tr.lag-row').length >= want.partitions && q('#lag-chart polyline').length > 0
    && q('#throughput-chart polyline').length > 0 && consumed.some(v => v > 0) && p99.length > 0
    && q('#stuck-table tr.workflow-row').length >= want.workflows;
}"""

DOM = """() => {
  const rows = s => [...document.querySelectorAll(s)];
  const cells = tr => Object.fromEntries([...tr.querySelectorAll('td')].flatMap(
    td => [...td.classList].map(c => [c, td.dataset.seconds !== undefined && td.dataset.seconds !== ''
                                          ? Number(td.dataset.seconds) : td.textContent])));
  return {
    status: document.getElementById('status').textContent,
    errors: rows('#errors p').map(p => p.textContent),
    workers: rows('#workers-table tr.worker-row').map(tr => [tr.dataset.url, cells(tr).up]),
    lag: rows('#lag-table tr.lag-row').map(tr => ({...tr.dataset, ...cells(tr)})),
    groups: rows('#throughput-table tr.group-row').map(tr => ({...tr.dataset, ...cells(tr)})),
    latency: rows('#latency-table tr.latency-row').map(tr => ({...tr.dataset, ...cells(tr)})),
    dlq: rows('#dlq-table tr.dlq-row').map(tr => ({...tr.dataset, ...cells(tr)})),
    workflows: rows('#stuck-table tr.workflow-row').map(tr => ({...tr.dataset, ...cells(tr)})),
    lagLines: document.querySelectorAll('#lag-chart polyline').length,
    lagLegend: rows('#lag-legend span').map(s => s.textContent),
    throughputLines: document.querySelectorAll('#throughput-chart polyline').length,
  };
}"""


def _filled_page(chromium: str, url: str, want: dict[str, int], shot: Path, timeout_s: float) -> dict[str, Any]:
    """Load the page in headless Chromium, wait until every panel shows data, keep a screenshot (in the test's
    tmp dir and build/test-artifacts/), and return what the DOM shows."""
    with browser_page(chromium) as page:
        page.goto(url)
        page.wait_for_function(PANELS_FILLED, arg=want, timeout=timeout_s * 1000, polling=250)
        dom: dict[str, Any] = page.evaluate(DOM)
        page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, "a blank page"
    return dom


def test_every_panel_fills_in_chromium_with_workers_found_by_announcement(chromium: str, live: Live,
                                                                          tmp_path: Path) -> None:
    assert live.said == [f"test: dashboard at {live.dashboard.url}"]
    assert not live.dashboard.settings.workers, "no --worker: the workers must be found by their announcements"
    dom = _filled_page(chromium, live.dashboard.url, {"workers": WORKERS, "partitions": PARTITIONS, "workflows": 0},
                       tmp_path / "dashboard.png", timeout_s=120)

    detail = json.dumps(dom)[:3000]
    assert dom["errors"] == [], detail
    assert f"{WORKERS} workers" in dom["status"], detail
    assert sorted(dom["workers"]) == sorted([u, "up"] for u in live.urls), detail
    assert {int(r["partition"]) for r in dom["lag"]} == set(range(PARTITIONS)), detail
    for r in dom["lag"]:
        assert r["group"] == live.group and r["topic"] == f"{live.group.removesuffix('-counter')}.in", detail
        assert int(r["log-end"]) - int(r["committed"]) == int(r["lag"]) >= 0, detail
    assert dom["lagLines"] == PARTITIONS and len(dom["lagLegend"]) == PARTITIONS, detail
    [g] = dom["groups"]
    assert g["group"] == live.group and float(g["consumed"]) > 0 and float(g["produced"]) > 0, detail
    assert dom["throughputLines"] == 2, detail  # consumed and produced
    [step] = [r for r in dom["latency"] if r["metric"] == "step"]
    assert 0 < step["p99-window"] <= 30 and 0 < step["p99-total"] <= 30 and int(step["count"]) > 0, detail
    assert {r["metric"] for r in dom["latency"]} == {"step", "batch", "commit"}, detail
    [dlq] = dom["dlq"]
    assert dlq["reason"] and int(dlq["count"]) > 0, detail


def test_cli_with_a_topology_scrapes_its_announced_workers(live: Live, subprocess_env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "streams", "dashboard", "--port", "0", "--interval", "0.3",
                             "--topology", str(live.topology)], env=subprocess_env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "dashboard: serving on http://127.0.0.1:" in first and "announced worker endpoint(s)" in first, first
        url = first.split("serving on ", 1)[1].split(" ", 1)[0]

        def snapshot() -> dict[str, Any]:
            with urllib.request.urlopen(url + "api/snapshot", timeout=5) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body

        wait_until(lambda: {w["url"] for w in snapshot()["workers"] if w["up"]} == set(live.urls), 30,
                   "the CLI's dashboard to scrape the topology's workers")
        snap = snapshot()
        assert snap["workers_from"] == "announcements" and {g["group"] for g in snap["groups"]} == {live.group}
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_cli_with_a_missing_topology_exits_2_in_one_line(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "streams", "dashboard", "--port", "0", "--topology",
                          str(tmp_path / "nowhere.yaml")], env=subprocess_env, capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "nowhere.yaml" in res.stderr and "Traceback" not in res.stderr


def test_a_stopped_worker_is_shown_down_then_its_lease_ends(live: Live, kafka: KafkaSettings) -> None:
    """Discovery follows the announcements: a worker that is gone stops being scraped once its lease is over,
    the one still running stays."""
    from streams.ops.status import Endpoints

    def workers() -> dict[str, bool]:
        return {w["url"]: w["up"] for w in live.dashboard.sampler.snapshot()["workers"]}

    wait_until(lambda: workers() == dict.fromkeys(live.urls, True), 60, "both workers up")
    leaving = live.workers.pop()
    assert leaving.stop() == 0
    gone = live.urls.pop()
    wait_until(lambda: workers().get(gone) is False, 30, "the stopped worker shown down")
    wait_until(lambda: gone not in workers(), Endpoints.LEASE_S + 20, "the stopped worker's lease to end")
    assert workers() == {live.urls[0]: True}


# ------------------------------------------------------------------------------------------------ Grafana


def grafana_metric_names(dash: dict[str, Any]) -> set[str]:
    """Every ``streams_*`` series name a panel or template variable of the Grafana dashboard queries."""
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return {name for e in exprs for name in re.findall(r"\bstreams_[a-z0-9_]+", e)}


def exported_names(text: str) -> tuple[set[str], set[str]]:
    """(series names a Prometheus scrape of this text can hold, those with a sample now). A family declared
    without a sample yet (a labelled counter nothing incremented) still counts as exported."""
    from prometheus_client.parser import text_string_to_metric_families

    declared, sampled = set(), set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        declared |= {family.name + s for s in suffixes.get(family.type, ("",))}
        sampled |= {s.name for s in family.samples}
    return declared | sampled, sampled


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        body: bytes = resp.read()
        return body.decode()


def test_every_metric_a_grafana_panel_queries_is_exported_by_a_worker(live: Live) -> None:
    wait_until(lambda: "streams_step_latency_seconds_bucket{" in _scrape(live.urls[0]), 60, "a worker to process")
    exported, sampled = set(), set()
    for url in live.urls:
        e, s = exported_names(_scrape(url))
        exported |= e
        sampled |= s
    dash = json.loads(GRAFANA_JSON.read_text())
    queried = grafana_metric_names(dash)
    assert len(queried) >= 15, queried
    assert queried - exported == set(), f"Grafana queries metrics no worker exports: {sorted(queried - exported)}"
    # What a worker that processed records (some poison) must have sampled by now, not only declared.
    for name in ("streams_records_in_total", "streams_records_out_total", "streams_consumer_lag",
                 "streams_step_latency_seconds_bucket", "streams_batch_seconds_bucket",
                 "streams_commit_seconds_bucket", "streams_dead_letters_total", "streams_rebalances_total"):
        assert name in queried and name in sampled, name

    # A renamed metric (on either side) is caught: the check is not vacuous.
    renamed = json.loads(GRAFANA_JSON.read_text().replace("streams_records_in_total", "streams_records_read_total"))
    assert grafana_metric_names(renamed) - exported == {"streams_records_read_total"}


# ------------------------------------------------------------------------------------------------ discovery


def test_discovery_believes_what_status_forwarding_believes(kafka: KafkaSettings) -> None:
    """The dashboard scrapes only announcements :class:`Endpoints` believes: signed with the group's key and
    leased; a forged one (unsigned, or signed with another key) is never fetched, nor an expired one."""
    from streams.kafka.admin import Admin
    from streams.ops.sampler import Discovery
    from streams.ops.status import Endpoints
    from streams.topology import TopicSpec

    group = f"dash-disc-{uuid.uuid4().hex[:8]}"
    topic, token = f"{group}.endpoints", "t-" + uuid.uuid4().hex
    assert Discovery(kafka, token).urls([group]) == []  # no topic yet: no worker serves HTTP
    Admin(kafka).ensure([TopicSpec(topic, 1, 1, "compact")])
    announcers = [Endpoints(kafka, topic, token), Endpoints(kafka, topic, "another-token"),
                  Endpoints(kafka, topic, token, clock=lambda: time.time() - 120)]
    announcers[0].announce("real", "http://10.0.0.1:9400", [0])
    announcers[1].announce("forged", "http://10.6.6.6:9400", [1])
    announcers[2].announce("expired", "http://10.0.0.2:9400", [2])
    producer = Producer(kafka.common())
    producer.produce(topic, orjson.dumps({"url": "http://10.6.6.7:1", "partitions": [0], "expires": time.time() + 20,
                                          "sig": "0" * 64}), b"unsigned")
    assert producer.flush(10) == 0
    for a in announcers:
        a.close()
    assert Discovery(kafka, token).urls([group]) == ["http://10.0.0.1:9400"]
    assert Discovery(kafka, None).urls([group]) == []  # without the token only loopback URLs are believed


# ------------------------------------------------------------------------------------------------ streams demo


def test_streams_demo_prints_a_dashboard_url_whose_every_panel_fills(chromium: str, tmp_path: Path,
                                                                     subprocess_env: dict[str, str]) -> None:
    """The loan demo on the real broker (its topics and groups get a fresh prefix): the URL it prints serves a
    page that, while the demo runs, shows its three workers (never named with --worker), lag, throughput, p99
    and the loan workflow's states."""
    env = {k: v for k, v in subprocess_env.items() if k != "SCHEMA_REGISTRY_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "streams", "demo", "--example", "loan", "--loans", "120"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("demo: dashboard at "):
                break
        assert lines and lines[-1].startswith("demo: dashboard at http://127.0.0.1:"), "".join(lines)
        url = lines[-1].split(" at ", 1)[1].strip()
        dom = _filled_page(chromium, url, {"workers": 3, "partitions": 12, "workflows": 1},
                           tmp_path / "dashboard-demo.png", timeout_s=60)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err[-3000:]
    detail = json.dumps(dom)[:3000]
    groups = {g["group"].rsplit("-", 1)[-1] for g in dom["groups"]}
    assert groups == {"orchestrator", "credit", "documents"}, detail
    assert {r["workflow"] for r in dom["workflows"]} == {"loan"}, detail
    assert "oracle          120/120 ended as the seeded fates predict" in out, out
