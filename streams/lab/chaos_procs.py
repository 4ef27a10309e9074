"""The chaos run's processes: three orchestrator workers and the three reference services, each a
``python -m streams`` subprocess with its own state directory and log, started, SIGKILLed, SIGSTOPped,
resumed and restarted on the harness's say-so.

Every start appends a marker line to the process's log, so a log is read per incarnation: which one hit its
armed fault point, which one lost its partitions after a pause.

:class:`Brokers` breaks the broker side the same way: the embedded broker (pauses only: it is memory-only) or
one node at a time of a three-node Apache Kafka cluster (SIGKILL and restart, SIGSTOP and SIGCONT).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.config import KafkaSettings
from streams.errors import KafkaUnavailableError, StreamsError
from streams.kafka.admin import Admin
from streams.kafka.apache import ApacheKafka
from streams.kafka.embedded import EmbeddedBroker
from streams.lab.bench_infra import popen_tied, with_package_path
from streams.lab.chaos_oracle import Rates
from streams.lab.chaos_plan import CONTROLLER, NODES, ORCHESTRATORS

ORDERS = "orders"  # the built-in example topology (streams.topology.EXAMPLES)
_MARK = "=== chaos: start "


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes] | None = None
    armed: tuple[str, int] | None = None  # fault point still to be hit (re-armed after a kill until it is)
    log_from: int = 0  # where the current incarnation's log starts
    starts: int = 0
    killed: bool = False  # the harness killed or stopped it on purpose
    stopped: bool = False  # SIGSTOPped
    points_hit: list[str] = field(default_factory=list)
    last_exit: str = ""  # why it last exited by itself: its fault point, "fenced" or "crash"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Fleet:
    def __init__(self, tmp: Path, env: Mapping[str, str], rates: Rates, commit_interval_ms: int = 50,
                 exactly_once: bool = False) -> None:
        self.tmp = tmp
        self.exactly_once = exactly_once
        self.fenced = 0  # exactly_once: incarnations that ended fenced (documented: the supervisor restarts them)
        self.env = {k: v for k, v in env.items() if k not in ("STREAMS_FAULT_POINT", "STREAMS_FAULT_AFTER")}
        self.env = with_package_path(self.env)
        self.rates = rates
        self.commit_interval_ms = commit_interval_ms
        self.procs: dict[str, Proc] = {}
        self.unexpected: list[dict[str, object]] = []

    def state_dir(self, name: str) -> Path:
        return self.tmp / "state" / name

    def log_path(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def _argv(self, name: str) -> list[str]:
        common = ["--state-dir", str(self.state_dir(name)), "--commit-interval-ms", str(self.commit_interval_ms),
                  "--instance-id", name]
        if self.exactly_once:
            common += ["--processing-guarantee", "exactly_once"]
        if name in ORCHESTRATORS:
            return ["worker", "--topology", str(ORDERS), "--processor", "orchestrator", *common]
        r = self.rates
        return ["service", name, "--topology", str(ORDERS), "--seed", str(r.seed), "--transient-rate",
                str(r.transient), "--permanent-rate", str(r.permanent), "--no-answer-customer-prefix",
                r.no_answer_prefix, *common]

    def start(self, name: str) -> None:
        proc = self.procs.setdefault(name, Proc(name))
        env = dict(self.env)
        if proc.armed is not None:
            env["STREAMS_FAULT_POINT"], env["STREAMS_FAULT_AFTER"] = proc.armed[0], str(proc.armed[1])
        path = self.log_path(name)
        with open(path, "ab") as logf:
            proc.log_from = logf.tell()
            armed = f" armed {proc.armed[0]} after {proc.armed[1]}" if proc.armed else ""
            logf.write(f"{_MARK}{proc.starts + 1}{armed} at {time.time():.3f} ===\n".encode())
            logf.flush()
            # tied to this process: a chaos run that is itself killed leaves no worker behind
            proc.popen = popen_tied([sys.executable, "-m", "streams", *self._argv(name)], env, logf)
        proc.starts += 1
        proc.killed = proc.stopped = False

    def log(self, name: str, whole: bool = False) -> str:
        """The log of the current incarnation (or every incarnation)."""
        path = self.log_path(name)
        if not path.exists():
            return ""
        with open(path, "rb") as f:
            if not whole:
                f.seek(self.procs[name].log_from if name in self.procs else 0)
            return f.read().decode(errors="replace")

    def processing(self, name: str) -> bool:
        return "restored; processing" in self.log(name)

    def steady(self, name: str) -> bool:
        """Alive, running, and its last group event is a partition restored and processing."""
        proc = self.procs[name]
        if not proc.alive or proc.stopped:
            return False
        events = [line for line in self.log(name).splitlines()
                  if ("partitions" in line and line.startswith("worker:")) or "restored; processing" in line]
        return bool(events) and "restored; processing" in events[-1]

    def kill(self, name: str, delete_state: bool = False) -> bool:
        """SIGKILL; with ``delete_state`` the state directory is removed once the process is gone."""
        proc = self.procs[name]
        if not proc.alive or proc.popen is None:
            return False
        proc.killed = True
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(30)
        if proc.armed is not None:  # not hit yet: armed again on restart, nearer, so that it is reached
            proc.armed = (proc.armed[0], max(2, proc.armed[1] // 3))
        if delete_state:
            shutil.rmtree(self.state_dir(name), ignore_errors=True)
        return True

    def pause(self, name: str) -> bool:
        proc = self.procs[name]
        if not proc.alive or proc.popen is None:
            return False
        proc.popen.send_signal(signal.SIGSTOP)
        proc.stopped = True
        self.mark(name, "SIGSTOP")
        return True

    def resume(self, name: str) -> None:
        proc = self.procs[name]
        if proc.popen is not None and proc.stopped:
            proc.popen.send_signal(signal.SIGCONT)
            self.mark(name, "SIGCONT")
        proc.stopped = False

    def mark(self, name: str, what: str) -> None:
        """A line in the process's log (opened for appending by both), so its log reads before/after."""
        with open(self.log_path(name), "ab") as logf:
            logf.write(f"=== chaos: {what} at {time.time():.3f} ===\n".encode())

    def reap(self) -> list[str]:
        """Processes that exited on their own since the last call: a fault point they were armed with (which
        is then disarmed and recorded), or a crash (recorded as unexpected). The caller restarts them."""
        gone: list[str] = []
        for name, proc in self.procs.items():
            if proc.popen is None or proc.killed or proc.popen.poll() is None:
                continue
            text = self.log(name)
            point = proc.armed[0] if proc.armed else None
            if point is not None and f"fault point {point} reached" in text:
                proc.points_hit.append(point)
                proc.armed = None
                proc.last_exit = f"fault point {point}"
            elif self.exactly_once and "streams: ProducerFencedError" in text:
                self.fenced += 1  # its transaction outlived a freeze or a broker fault; it wrote nothing since
                proc.last_exit = "fenced"
            else:
                proc.last_exit = "crash"
                tail = text.strip().splitlines()[-5:]
                self.unexpected.append({"process": name, "returncode": proc.popen.returncode, "log_tail": tail})
            proc.killed = True  # handled: not reported twice
            gone.append(name)
        return gone

    def stop_all(self, timeout_s: float = 40.0) -> dict[str, int | None]:
        """SIGTERM everything (resuming a stopped one first) and wait: each commits and closes its stores."""
        for proc in self.procs.values():
            if proc.stopped and proc.popen is not None:
                proc.popen.send_signal(signal.SIGCONT)
            if proc.alive and proc.popen is not None:
                proc.killed = True
                proc.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout_s
        for name, proc in self.procs.items():
            if proc.popen is None:
                continue
            try:
                codes[name] = proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # stuck: its threads' stacks go to its log first, for the report
                proc.popen.send_signal(signal.SIGUSR2)
                time.sleep(1.0)
                proc.popen.kill()
                proc.popen.wait(10)
                codes[name] = None
        return codes


class Brokers:
    """The broker faults of a run: on the embedded broker only pauses; on a three-node cluster, one node at a
    time is SIGKILLed (then started again on its data) or SIGSTOPped (then resumed)."""

    def __init__(self, embedded: EmbeddedBroker | None = None, cluster: ApacheKafka | None = None) -> None:
        self.embedded, self.cluster = embedded, cluster
        self.stopped: set[int] = set()

    def settled(self, kafka: KafkaSettings) -> bool:
        """Every node serving and every partition fully in sync: the previous broker fault has healed, so the
        next one takes down one replica only."""
        if self.cluster is None:
            return True
        if self.stopped or not all(self.cluster.running().values()):
            return False
        try:
            return not Admin(kafka).unready(timeout_s=5)
        except StreamsError:
            return False

    def node(self, target: str) -> int:
        """A node id for a planned target; ``controller``: the quorum leader now."""
        assert self.cluster is not None
        if target == CONTROLLER:
            leader = self.cluster.quorum_leader()
            return leader if leader in NODES else NODES[0]
        return int(target)

    def pause(self, target: str) -> str:
        if self.cluster is None:
            assert self.embedded is not None
            os.kill(self.embedded.pid, signal.SIGSTOP)
            self.stopped.add(0)
            return "broker"
        node = self.node(target)
        self.cluster.signal_node(node, signal.SIGSTOP)
        self.stopped.add(node)
        return str(node)

    def resume(self, target: str) -> None:
        node = 0 if self.cluster is None else int(target)
        with contextlib.suppress(OSError, KafkaUnavailableError):
            if self.cluster is None:
                assert self.embedded is not None
                os.kill(self.embedded.pid, signal.SIGCONT)
            else:
                self.cluster.signal_node(node, signal.SIGCONT)
        self.stopped.discard(node)

    def kill(self, target: str) -> int:
        assert self.cluster is not None
        node = self.node(target)
        self.cluster.signal_node(node, signal.SIGKILL)
        return node

    def restart(self, node: int) -> None:
        assert self.cluster is not None
        self.cluster.restart_node(node)

    def resume_all(self) -> None:
        for node in list(self.stopped):
            self.resume("broker" if self.cluster is None else str(node))
