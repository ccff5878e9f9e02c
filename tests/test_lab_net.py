"""lab.net.free_tcp_port: a port named before it is bound must not be one the kernel hands out meanwhile."""

import socket

from lab.net import LOW_PORT, ephemeral_range, free_tcp_port


def test_the_free_port_lies_below_the_ephemeral_range_and_can_be_bound():
    """Ports bound to 0 (by other tests, Bokeh, Chromium, ZeroMQ's ``*``) come from the ephemeral range; the port
    chosen lies below it, so none of them can take it before it is bound (until 2026-12-05 it was itself a port from
    that range, and a soak test once found it taken: "Address already in use")."""
    lo, hi = ephemeral_range()
    assert 0 < lo < hi
    ports = {free_tcp_port() for _ in range(20)}
    assert all(LOW_PORT <= p < lo for p in ports), (sorted(ports), lo)
    assert len(ports) > 1                                   # chosen at random, not one fixed port
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_a_port_in_use_is_not_chosen(monkeypatch):
    """When every port tried below the range is taken (here the random choice always falls on a taken one), the
    kernel's own choice is returned, not the taken port."""
    import lab.net as net

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        monkeypatch.setattr(net, "LOW_PORT", port - 500)
        monkeypatch.setattr(net, "ephemeral_range", lambda: (port + 500, 65535))
        monkeypatch.setattr(net.random.SystemRandom, "randrange", lambda self, a, b: port)
        got = net.free_tcp_port()
        assert got != port
