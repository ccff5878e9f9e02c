"""A free TCP port on loopback, for laboratory runs that must name an endpoint before binding it."""

from __future__ import annotations

import socket


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
