"""The live dashboard: one page that polls ``/api/snapshot``, the lag, throughput, latency, stuck workflows and
dead letters that :mod:`streams.ops.sampler` reads from Kafka and the workers once per tick.

Security: the server binds to 127.0.0.1 unless told otherwise, and refuses to bind anywhere else without a
bearer token. With a token, ``/api/snapshot`` answers 401 unless ``Authorization: Bearer <token>`` matches.
The page itself holds no data and is served to anyone: a browser cannot send a header on navigation, so the
page reads the token from the URL fragment (``/#token=...``, never sent to a server, so never in any access
log), keeps it in ``sessionStorage`` and sends it as the header. Request logs name method, path without query
and status, never headers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from importlib import resources

from starlette.responses import Response

from streams.config import KafkaSettings
from streams.errors import ConfigError, StreamsError
from streams.ops.sampler import DashboardSettings, Sampler
from streams.runtime.heartbeat import Heartbeats, health, run_rounds
from streams.topology import Topology
from streams.web import Access, App, Op, Server, json_answer

__all__ = ["Dashboard", "DashboardSettings", "beside", "groups_of", "page"]

_PAGE = "dashboard_page.html"
Log = Callable[[str], None]


def page() -> bytes:
    """The page: plain HTML, CSS and JS in one package file, no build step and nothing fetched from elsewhere."""
    return resources.files(__package__ or "streams.ops").joinpath(_PAGE).read_bytes()


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _ops(sampler: Sampler, beats: Heartbeats) -> list[Op]:
    html = page()
    return [
        *(Op("GET", path, lambda c: Response(html, media_type="text/html; charset=utf-8"), "public", "the page",
             produces="text/html", inline=True) for path in ("/", "/index.html")),
        Op("GET", "/api/snapshot", lambda c: Response(sampler.snapshot_bytes(), media_type="application/json"),
           summary="what the page draws", inline=True),
        Op("GET", "/healthz", lambda c: json_answer(*health(beats)), "public", "200 ok, or 503 naming the sampler "
           "when it died or is overdue", inline=True),
    ]


class Dashboard:
    """The server and its sampling thread; ``start()`` returns once the first sample is in and it listens."""

    def __init__(self, settings: DashboardSettings, kafka: KafkaSettings, log: Log = lambda _m: None,
                 sampler: Sampler | None = None) -> None:
        self.settings = settings
        self._log = log
        self.sampler = sampler or Sampler(settings, kafka, worker_token=settings.token)
        self._stop = threading.Event()
        self.heartbeats = Heartbeats()
        app = App("dashboard", _ops(self.sampler, self.heartbeats), Access(settings.token), bind_host=settings.host,
                  headers=_PAGE_HEADERS, log=log)
        self._http = Server(app, settings.host, settings.port, "dashboard-http")
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if not self._http.running:
            raise StreamsError("dashboard not started")
        return self._http.url() + "/"

    def start(self) -> Dashboard:
        self._http.start()
        self.sampler.tick()
        self._threads = [run_rounds(self.heartbeats, "dashboard-sampler", self._sample_once, self.settings.interval_s,
                                    self._stop, self._log)]
        return self

    def _sample_once(self) -> None:
        """One round; one that could not read lag (the broker is away) failed, though the page shows why."""
        self.sampler.tick()
        if self.sampler.lag_error is not None:
            raise StreamsError(self.sampler.lag_error)

    def stop(self) -> None:
        self._stop.set()
        self._http.stop()
        for t in self._threads:
            t.join(timeout=self.settings.timeout_s + 5)

    def wait(self) -> None:
        """Block until stopped (the CLI's foreground)."""
        while not self._stop.wait(0.5):
            pass

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def groups_of(topo: Topology) -> list[str]:
    """The consumer groups a topology's workers run in (each processor's, as ``streams worker`` names it)."""
    return [topo.default_group(proc) for proc in topo.processors.values()]


@contextlib.contextmanager
def beside(kafka: KafkaSettings, groups: Sequence[str], say: Log, what: str, *, token: str | None = None,
           port: int = 8088, interval_s: float = 1.0, linger: bool = False) -> Iterator[Dashboard]:
    """A dashboard over ``groups`` for as long as the block runs, as ``streams demo`` and ``streams dev`` start
    one beside their workers: the workers are found by their announcements, the URL is said once it serves.
    ``port`` when free, else any free port: a second demo on the machine still gets its page. With ``linger``
    and a terminal to answer, the page stays up after the block until Ctrl-C: a demo ends in seconds, and
    someone who opened the page is still reading it."""
    settings = DashboardSettings(port=port, groups=tuple(groups), interval_s=interval_s, token=token)
    try:
        dash = Dashboard(settings, kafka).start()
    except ConfigError:  # the port is taken
        dash = Dashboard(dataclasses.replace(settings, port=0), kafka).start()
    try:
        auth = " (bearer token: $STREAMS_HTTP_TOKEN, or open it as /#token=...)" if token else ""
        say(f"{what}: dashboard at {dash.url}{auth}")
        yield dash
        if linger and sys.stdin.isatty() and sys.stderr.isatty():
            say(f"{what}: the dashboard stays at {dash.url} until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                dash.wait()
    finally:
        dash.stop()
