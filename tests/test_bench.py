"""`streams bench`: the CI variant completes and prints one well-formed JSON object. No timing assertions: the
figures depend on the machine; what the suite guards is that every phase still runs end to end."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.contracts import RegistryClient
from streams.errors import ConfigError
from streams.kafka.admin import Admin
from streams.kafka.embedded import EmbeddedBroker
from streams.lab.bench import Bench
from streams.lab.bench_codec import TOPIC as CODEC_TOPIC
from streams.lab.bench_codec import codec_bench
from streams.lab.bench_infra import BenchError
from streams.lab.bench_latency import SAGA_PATH, hop_times, percentile
from streams.lab.bench_model import BenchConfig, BenchResult, table
from streams.registry import RegistryServer
from streams.topology import TopicSpec

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"steps_per_s", "floor_steps_per_s", "ratio", "p50_ms", "p99_ms", "restore_records_per_s", "failover_s",
           "peak_rss_mb", "codec_records_per_s", "codec_confluent_records_per_s", "codec_ratio"}
PARAMS = {"orders", "partitions", "latency_orders_per_s", "latency_seconds", "latency_warmup_seconds",
          "restore_entities", "codec_records", "kafka", "hot_path"}


@pytest.mark.kafka
def test_quick_bench_prints_one_well_formed_json_object(tmp_path: Path) -> None:
    # Always the embedded default: the saga's topic names are fixed, so an external cluster shared with the
    # saga tests would (rightly) be refused.
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "--quick", "--json"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must hold the JSON object alone, got: {res.stdout!r}"
    out = json.loads(lines[0])
    assert set(out) == FIGURES | PARAMS
    for key in FIGURES:
        assert isinstance(out[key], float | int) and math.isfinite(out[key]) and out[key] > 0, (key, out[key])
    assert out["ratio"] == pytest.approx(out["steps_per_s"] / out["floor_steps_per_s"], rel=0.01)
    assert out["codec_ratio"] == pytest.approx(out["codec_records_per_s"] / out["codec_confluent_records_per_s"],
                                               rel=0.01)
    assert out["p50_ms"] <= out["p99_ms"]
    assert (out["orders"], out["restore_entities"], out["codec_records"], out["kafka"]) == \
        (20_000, 20_000, 5_000, "embedded")
    assert out["hot_path"] == "compiled"  # scripts/test builds it; the workers log the same decision
    assert "bench: failover" in res.stderr  # progress goes to stderr
    hops = re.search(r"bench: per hop, p50/p99 ms of CreateTime to CreateTime: (.*)", res.stderr)
    assert hops and len(re.findall(r"\w+->[\w.]+ \d+/\d+", hops.group(1))) == 7, res.stderr[-4000:]
    print(f"quick bench took {time.monotonic() - started:.0f}s: {out}")


@pytest.mark.kafka
def test_an_external_cluster_holding_the_saga_topics_is_refused(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        kafka = broker.settings(env={})
        Admin(kafka).ensure([TopicSpec("orders.events", 4)])
        bench = Bench(BenchConfig(orders=10, restore_entities=10, bootstrap=broker.bootstrap), lambda _m: None)
        with pytest.raises(BenchError, match=r"orders\.events already exist"):
            bench.run()


def test_percentile_is_nearest_rank_and_the_table_names_targets() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile([7.0], 0.99)) == (50.0, 99.0, 7.0)
    result = BenchResult(60_000, 100_000, 0.6, 20, 150, 250_000, 8, 300, 50_000, 10_000, 5.0)
    text = table(result, BenchConfig())
    assert "steps_per_s" in text and ">= 50,000" in text and "codec_ratio" in text
    assert [ln.split()[0] for ln in text.splitlines() if ln.rstrip().endswith("MISS")] == ["p99_ms"]
    with pytest.raises(ConfigError, match="orders must be > 0"):
        BenchConfig(orders=0)
    with pytest.raises(ConfigError, match="latency-warmup-seconds must be >= 0, got -1"):
        BenchConfig(latency_warmup_seconds=-1)
    assert "after 30s of warm-up" in text


def test_kafka_and_an_external_cluster_are_refused_together_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "--kafka", "--bootstrap", "127.0.0.1:1"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--kafka" in lines[0] and "--bootstrap" in lines[0], res.stderr
    with pytest.raises(ConfigError, match="--kafka starts its own"):
        BenchConfig(apache_kafka=True, bootstrap="127.0.0.1:1")
    assert BenchConfig(apache_kafka=True).params()["kafka"] == "apache"


@pytest.mark.kafka
def test_the_rebalance_lab_measures_a_join_and_a_crash_on_the_session_broker(kafka: KafkaSettings) -> None:
    """One round of the engine's protocol (classic, eager range; docs/kafka.md has all three). A SIGKILLed
    member's partitions cannot move before the broker expires its 6 s session: a failover under that would
    mean the lab measured something else."""
    from streams.lab.rebalance import one_round

    r = one_round(kafka, "classic-range", rate_per_s=200.0)
    assert r.protocol == "classic-range"
    assert 0 < r.handoff_ms < 15_000 and r.join_pause_ms > 0
    assert r.failover_ms is not None and 4_000 < r.failover_ms < 30_000


def test_codec_phase_times_ours_and_confluents_serializer_on_the_same_records_and_registry() -> None:
    lines: list[str] = []
    with RegistryServer(port=0, access_log=True, logger=lines.append) as registry:
        result = codec_bench(registry.url, 300, rounds=1, log=lines.append)
        # one subject, one version: both sides registered the same schema, and wrote its id (checked in the phase)
        assert RegistryClient(registry.url).versions(f"{CODEC_TOPIC}-value") == [1]
    assert result.ours_per_s > 0 and result.confluent_per_s > 0
    assert result.ratio == pytest.approx(result.ours_per_s / result.confluent_per_s)
    assert result.to_json()["codec_ratio"] == round(result.ratio, 3)
    assert any(ln.startswith("bench: codec: ours") for ln in lines)
    # no registry call per record: a handful of set-up calls for 2 x 300 records encoded and decoded
    assert sum("streams schema registry:" in ln for ln in lines) < 20


def test_codec_only_prints_one_json_object_without_kafka(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "--codec-only", "--codec-records", "200", "--json"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout)
    assert set(out) == {"codec_records_per_s", "codec_confluent_records_per_s", "codec_ratio", "codec_records",
                        "hot_path"} and out["codec_records"] == 200
    assert out["codec_ratio"] == pytest.approx(out["codec_records_per_s"] / out["codec_confluent_records_per_s"],
                                               rel=0.01)
    bad = subprocess.run([sys.executable, "-m", "streams", "bench", "--codec-only", "--codec-records", "0"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "streams: ConfigError: bench: codec-records must be > 0, got 0"]


def test_hop_times_split_each_completed_order_into_the_sagas_hops() -> None:
    """Each order's records in CreateTime order: a hop is the time from one to the next, named by the worker that
    read the first; an order off the saga's path (here one retried) is left out, and so are unknown ids."""
    records = []
    for n, oid in enumerate(("a", "b", "c")):
        records += [(oid, 1000 + 10 * i + n * i, topic) for i, topic in enumerate(SAGA_PATH)]
    records += [("x", 5, SAGA_PATH[0])]  # not one of ours
    records.append(("c", 1001, SAGA_PATH[1]))  # c's payment was asked twice
    hops = hop_times(reversed(records), {"a", "b", "c"})
    assert [h for h, _, _ in hops] == ["orchestrator->payments.commands", "payment->orders.events",
                                       "orchestrator->inventory.commands", "inventory->orders.events",
                                       "orchestrator->shipping.commands", "shipping->orders.events",
                                       "orchestrator->orders.results"]
    assert all((p50, p99) == (10, 11) for _, p50, p99 in hops), hops
