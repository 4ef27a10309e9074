"""The HTTP endpoints' one security rule, shared by the worker status server and the dashboard.

Bound to loopback, no token is needed; bound anywhere else, a bearer token is required on every data request,
compared in constant time, and never written to a log or an error message.
"""

from __future__ import annotations

import hmac
import ipaddress

from streams.errors import ConfigError


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine: a loopback address or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it is not loopback


def check_bind(host: str, token: str | None, flag: str = "--token") -> None:
    """Refuse to serve data beyond this machine without a bearer token; ``flag`` is the command's own option."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to bind {host}: a non-loopback address needs a bearer token "
            f"(pass {flag} or set STREAMS_HTTP_TOKEN), or bind 127.0.0.1"
        )


def bearer_ok(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (always true without a token), in constant time."""
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
