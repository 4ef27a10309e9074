"""What the benchmark needs around the system under test: child processes that cannot outlive it, a broker,
log ends read from fetches, committed offsets, and peak memory of a child.

Children are started through a four-line wrapper that asks Linux to SIGKILL them when the bench dies
(``PR_SET_PDEATHSIG``, kept across ``exec``), so even a SIGKILLed bench leaves no broker or worker behind;
every normal exit path also stops them explicitly (:meth:`Children.close`). The death signal follows the
*thread* that started the child, so children are only ever started from the main thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import IO

from streams.config import KafkaSettings
from streams.errors import KafkaUnavailableError, StreamsError
from streams.kafka import io
from streams.kafka.client import plain_consumer, until_settled
from streams.kafka.embedded import broker_binary, free_port
from streams.kafka.io import Consumer, TopicPartition

# Checks that the bench is still its parent after arming the death signal (it may have died in between).
_WRAPPER = ("import ctypes,os,signal,sys\n"
            "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
            "os.getppid() == int(sys.argv[1]) or sys.exit(1)\n"
            "os.execv(sys.argv[2], sys.argv[2:])")


class BenchError(StreamsError):
    """The bench could not measure what it set out to (a phase did not finish, or its result is invalid)."""


def popen_tied(argv: Sequence[str], env: Mapping[str, str], log: IO[bytes],
               cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A child that Linux SIGKILLs when this process dies (see above; the chaos run's fleet uses it too), its
    output appended to ``log``. Call it from the main thread only."""
    cmd = list(argv)
    if sys.platform.startswith("linux"):
        cmd = [sys.executable, "-c", _WRAPPER, str(os.getpid()), *cmd]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)


class Child:
    """One child process with its output in a log file."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path, log: IO[bytes]) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def peak_rss_mb(self) -> float:
        """The process's peak resident set (VmHWM) so far; read it before the process exits."""
        return vm_hwm_mb(self.pid)

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a worker finishes its batch and commits), SIGKILL if it does not exit in time."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def with_package_path(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` whose PYTHONPATH finds this very ``streams`` package first: children run ``python -m streams``
    from a scratch directory, where an uninstalled checkout would not be found (installed: harmless)."""
    here = str(Path(__file__).resolve().parents[2])  # the directory ``streams`` was imported from
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))}


class Children:
    """Every child the bench starts; :meth:`close` stops those still running, whatever happened before."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self._all: list[Child] = []

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed by Child.stop
        try:
            proc = popen_tied(argv, {**self.env, **(env or {})}, log, self.workdir)
        except OSError:
            log.close()
            raise
        child = Child(name, proc, log_path, log)
        self._all.append(child)
        return child

    def streams(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        """A ``python -m streams ...`` child."""
        return self.spawn(name, [sys.executable, "-m", "streams", *args], env)

    def close(self) -> None:
        for c in self._all:
            if c.alive():
                c.proc.terminate()
        deadline = time.monotonic() + 10
        for c in self._all:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(max(deadline - time.monotonic(), 0.1))
            if c.alive():
                c.proc.kill()
                c.proc.wait(10)
            c.stop(0)
        self._all.clear()


def start_broker(children: Children, name: str, timeout_s: float = 15.0) -> tuple[KafkaSettings, Child]:
    """A fresh memory-only embedded broker (Tansu) as a child; it ends with the bench at the latest."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    child = children.spawn(name, [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                                  url, "--storage-engine", "memory://tansu/"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise KafkaUnavailableError(f"embedded broker exited early: {child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return KafkaSettings.from_env(f"127.0.0.1:{port}", env={}, broker="tansu"), child
        time.sleep(0.02)
    raise KafkaUnavailableError(f"embedded broker did not listen on port {port} within {timeout_s}s")


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process, from /proc (Linux)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read peak memory of pid {pid}: {exc}") from exc
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM line")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a live process has used, from /proc (Linux); 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probe(kafka: KafkaSettings, group: str | None = None, conf: Mapping[str, object] | None = None) -> Consumer:
    return plain_consumer({**kafka.common(), **kafka.consumer_defaults(), "fetch.wait.max.ms": 10,
                     "group.id": group or f"bench-probe-{uuid.uuid4().hex}", "enable.auto.commit": False,
                     **(conf or {})})


def log_ends(kafka: KafkaSettings, topic: str, partitions: int, timeout_s: float = 60.0) -> dict[int, int]:
    """The log end of each partition, from a fetch's partition EOF.

    ListOffsets alone is not trusted (the embedded broker answers the last batch's base offset + 1), but it is
    never past the end, so reading starts there and only the last batch is fetched again.
    """
    c = _probe(kafka, conf={"enable.partition.eof": True})
    try:
        tps = []
        for p in range(partitions):
            _lo, hi = until_settled(partial(c.get_watermark_offsets, TopicPartition(topic, p), timeout=10),
                               time.monotonic() + timeout_s)
            tps.append(TopicPartition(topic, p, max(hi - 1, 0)))
        c.assign(tps)
        ends: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(ends) < partitions:
            if time.monotonic() > deadline:
                raise BenchError(f"no end of log for {topic} partitions {sorted(set(range(partitions)) - set(ends))}")
            for m in c.consume(10000, 0.2):
                err = m.error()
                if err is not None and io.is_partition_eof(err):
                    ends[m.partition()] = m.offset()
        return ends
    finally:
        c.close()


class Offsets:
    """Reads a group's committed offsets repeatedly with one client (reading does not join the group)."""

    def __init__(self, kafka: KafkaSettings, group: str, topic: str, partitions: int) -> None:
        self._c = _probe(kafka, group)
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def read(self) -> dict[int, int]:
        return {tp.partition: tp.offset for tp in self._c.committed(self._tps, timeout=10)}

    def close(self) -> None:
        self._c.close()


def commit_at(kafka: KafkaSettings, group: str, offsets: Mapping[str, Mapping[int, int]]) -> None:
    """Commit ``offsets`` for a group with no members yet, so its workers start there and not at offset 0."""
    c = _probe(kafka, group)
    try:
        tps = [TopicPartition(t, p, o) for t, offs in offsets.items() for p, o in offs.items()]
        if tps:
            until_settled(lambda: c.commit(offsets=tps, asynchronous=False), time.monotonic() + 60)
    finally:
        c.close()


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05,
             children: Sequence[Child] = ()) -> float:
    """Poll until ``pred()``; returns the monotonic time it held. Fails early when a watched child dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return time.monotonic()
        for c in children:
            if not c.alive():
                raise BenchError(f"{c.name} exited (code {c.proc.returncode}) while waiting for {what}:\n{c.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
