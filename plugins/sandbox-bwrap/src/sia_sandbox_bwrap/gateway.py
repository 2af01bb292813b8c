"""The gateway relay's host side: the loopback addresses the scaffold's gateway variables point
at, and a Unix socket (bound into the sandbox) whose connections are forwarded to one of them."""

from __future__ import annotations

import functools
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from .supervisor import Relay

_GATEWAY_VARS = ("SIA_GATEWAY_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def gateway_addresses(env: Mapping[str, str]) -> list[tuple[str, int]]:
    """The distinct loopback ``(host, port)`` the scaffold's gateway variables point at."""
    found: list[tuple[str, int]] = []
    for var in _GATEWAY_VARS:
        url = env.get(var)
        if not url:
            continue
        parts = urllib.parse.urlsplit(url)
        if parts.hostname in _LOOPBACK and parts.port and (parts.hostname, parts.port) not in found:
            found.append((parts.hostname, parts.port))
    return found


def _connect_untimed(target: tuple[str, int]) -> socket.socket:
    """Connect within 10 s, then block without a timeout: a model call may take minutes."""
    sock = socket.create_connection(target, 10.0)
    sock.settimeout(None)
    return sock


class HostRelay:
    """A Unix socket in a private folder whose connections are forwarded to a TCP address."""

    def __init__(self, path: Path, host: str, port: int) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        target = ("127.0.0.1" if host == "localhost" else host, port)
        self.relay = Relay(listener, functools.partial(_connect_untimed, target))
        self.relay.start()

    def close(self) -> None:
        """Stop accepting and cut every open connection."""
        self.relay.close()
