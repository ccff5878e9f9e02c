"""A free TCP port on loopback, for laboratory runs that must name an endpoint before binding it."""

from __future__ import annotations

import random
import socket

#: where the port is looked for: below the kernel's ephemeral range, so that no socket bound to port 0 in the
#: seconds between the choice and the bind (another test, a Bokeh server, Chromium, a ZeroMQ ``*`` endpoint) can be
#: handed the same port (a soak test failed so once: "Address already in use")
LOW_PORT = 20000
_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for sockets bound to port 0 (Linux; elsewhere the IANA range 49152-65535)."""
    try:
        with open(_RANGE_FILE) as f:
            lo, hi = (int(v) for v in f.read().split()[:2])
        return lo, hi
    except (OSError, ValueError):
        return 49152, 65535


def free_tcp_port(tries: int = 64) -> int:
    """A port free on 127.0.0.1 now, chosen at random below the ephemeral range (see :data:`LOW_PORT`); a port
    the kernel hands out if none of ``tries`` there is free."""
    lo = ephemeral_range()[0]
    rng = random.SystemRandom()
    for _ in range(tries if lo - LOW_PORT > 100 else 0):
        port = rng.randrange(LOW_PORT, lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
