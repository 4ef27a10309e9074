"""``streams dev``'s moving parts: worker processes under one supervisor, their logs interleaved line by line
with the process's name in front, and a one-line census of entities per state from the workers' ``/metrics``.

A child that exits while nothing asked it to is reported and ends the whole run (exit 1) rather than being
restarted: in development a worker dies of something deterministic (a bad import, a broken workflow) far more
often than of bad luck, and a restart loop would bury its traceback under the next attempt's start-up lines.
The traceback stays the last thing the child printed; a fixed project is one ``streams dev`` away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from streams.contracts import Catalogue, RegistryClient
from streams.errors import StreamsError
from streams.kafka.embedded import orphan_guarded
from streams.ops.sampler import Scrape, fetch_metrics
from streams.progress import SILENT, Progress

READY = "restored; processing"  # what a worker logs once its partitions are restored and it consumes


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    url: str | None
    ready: threading.Event = field(default_factory=threading.Event)
    pump: threading.Thread | None = None


class Supervisor:
    """Starts children, copies their output to ``out`` as ``name | line``, and stops them all."""

    def __init__(self, out: TextIO, env: Mapping[str, str]) -> None:
        self.out = out
        self.env = dict(env)
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._width = 8

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def start(self, name: str, argv: Sequence[str], url: str | None = None) -> Child:
        # A session of its own: a terminal's Ctrl-C reaches only the supervisor, which stops the children in
        # order; the orphan guard ends them if the supervisor itself is killed.
        proc = subprocess.Popen(orphan_guarded(list(argv)), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(name, proc, url)
        self._width = max(self._width, len(name))
        child.pump = threading.Thread(target=self._pump, args=(child,), name=f"dev-{name}", daemon=True)
        child.pump.start()
        self.children.append(child)
        return child

    def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        for raw in iter(child.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if READY in line:
                child.ready.set()
            self.say(f"{child.name:<{self._width}} | {line}")

    def wait_ready(self, timeout_s: float, stop: threading.Event) -> list[Child]:
        """Wait until every child processes, one exits or ``stop`` is set; returns the children not ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not stop.wait(0.2):
            if all(c.ready.is_set() for c in self.children) or any(c.proc.poll() is not None for c in self.children):
                break
        return [c for c in self.children if not c.ready.is_set()]

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is not None]

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child (each commits and closes), then wait; a child still running at the end is killed."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.say(f"dev: {child.name} did not stop within {timeout_s:.0f}s; killed")
                child.proc.kill()
                child.proc.wait()
            if child.pump is not None:
                child.pump.join(5)


def census(urls: Sequence[str], token: str | None = None) -> tuple[dict[tuple[str, str], int], int]:
    """Entities per (workflow, state) and dead letters, summed over the workers' ``/metrics``; a worker that
    does not answer (still starting) counts nothing."""
    states: dict[tuple[str, str], int] = {}
    dead = 0
    for url in urls:
        try:
            scrape = Scrape.parse(fetch_metrics(f"{url.rstrip('/')}/metrics", token, 2.0))
        except StreamsError:
            continue
        for (workflow, state), n in scrape.sum_by("streams_workflows", ("workflow", "state")).items():
            if n:
                states[(workflow, state)] = states.get((workflow, state), 0) + int(n)
        dead += int(sum(scrape.sum_by("streams_dead_letters_total", ()).values()))
    return states, dead


def summary_line(states: Mapping[tuple[str, str], int], dead: int) -> str:
    by_workflow: dict[str, list[str]] = {}
    for (workflow, state), n in sorted(states.items()):
        by_workflow.setdefault(workflow, []).append(f"{state}={n}")
    parts = [f"{w}: {' '.join(s)}" for w, s in by_workflow.items()] or ["no entities yet"]
    return f"dev: {' | '.join(parts)}   dead letters {dead}"


def register_schemas(catalogue: Catalogue, client: RegistryClient, strategies: Iterable[str],
                     progress: Progress = SILENT) -> int:
    """Every subject of the contracts, under each subject strategy the processors use, into the registry
    (idempotent), as ``streams schemas register`` does."""
    subjects = {name: entry for strategy in sorted(set(strategies)) for name, entry in
                catalogue.subjects(strategy).items()}
    progress.phase(f"registering {len(subjects)} schema subjects", len(subjects))
    for i, (subject, entry) in enumerate(subjects.items(), 1):
        client.register(subject, entry.text)
        progress.advance(i)
    progress.end()
    return len(subjects)


def child_env(base: Mapping[str, str], bootstrap: str, registry: str, project: str) -> dict[str, str]:
    """The children's environment: this broker and registry, and the project importable without an install."""
    path = os.pathsep.join(p for p in (project, base.get("PYTHONPATH", "")) if p)
    return {**base, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry, "PYTHONPATH": path}
