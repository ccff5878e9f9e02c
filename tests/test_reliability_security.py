"""Security on a lab network (issue 8, criterion 5): ``stemwatch serve`` with CURVE and client-key
allow-lists on the frame socket and on the events PUB socket (keys from ``stemwatch keys``), and
a dashboard that listens on localhost unless told otherwise and then checks websocket origins.

Streamer-level CURVE tests (Publisher/Receiver, wrong server key, configuration errors) are in
tests/test_streamer_security.py.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import msgpack
import pytest
import zmq

from dashboard.server import DashboardServer
from engine.service import EVENT_TOPIC
from stemwatch.cli import build_parser, main
from stemwatch.config import DashboardConfig
from streamer import Publisher
from streamer.recording import RecordingReader, iter_frames
from streamer.security import Curve

from _ws import ws_status
from lab.net import free_tcp_port
from _wait import wait_until
from test_reliability_faults import MOVIE


def _keys(tmp_path):
    keys = tmp_path / "keys"
    for name in ("analyzer", "microscope", "operator", "intruder"):
        assert main(["keys", "--out", str(keys), "--name", name]) == 0
    pubs, subs = tmp_path / "publishers", tmp_path / "subscribers"
    pubs.mkdir()
    subs.mkdir()
    (pubs / "microscope.key").write_bytes((keys / "microscope.key").read_bytes())
    (subs / "operator.key").write_bytes((keys / "operator.key").read_bytes())
    return keys, pubs, subs


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_serve_with_curve_allow_lists_on_frame_and_event_sockets(tmp_path):
    keys, pubs, subs = _keys(tmp_path)
    frames_ep, events_ep = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    server_pub = str(keys / "analyzer.key")
    frames = [f.data for _, f in zip(range(16), iter_frames(MOVIE))]       # a Si goes 3 -> 4-fold at 8
    rec = tmp_path / "secure.swrec"
    got = {"operator": [], "intruder": [], "plain": []}
    stop = threading.Event()

    def listen(name, curve):
        ctx = zmq.Context()
        s = ctx.socket(zmq.SUB)
        if curve is not None:
            s.curve_secretkey, s.curve_publickey = zmq.auth.load_certificate(str(keys / f"{name}.key_secret"))[::-1]
            s.curve_serverkey = zmq.auth.load_certificate(server_pub)[0]
        s.subscribe(EVENT_TOPIC)
        s.connect(events_ep)
        while not stop.is_set():
            if s.poll(100):
                got[name].append(msgpack.unpackb(s.recv_multipart()[1]))
        s.close(0)
        ctx.term()

    def send():
        good = Publisher(frames_ep, bind=False, curve=Curve(str(keys / "microscope.key_secret"), server_pub))
        intruder = Publisher(frames_ep, bind=False, curve=Curve(str(keys / "intruder.key_secret"), server_pub),
                             send_timeout_s=0.5)
        try:
            # blocks until serve is up and the handshake passed (a connecting PUSH queues only to
            # peers that completed it)
            good.start_series("trusted", (256, 256), "uint16", 0.1, frame_time_s=0.08)
            try:                                     # refused at the handshake: nothing can be queued
                intruder.start_series("intruder", (256, 256), "uint16", 0.1)
            except TimeoutError:
                pass
            for a in frames:
                good.send_frame(a)
                time.sleep(0.08)
            good.end_series()
        finally:
            intruder.close()
            good.close()

    threads = [threading.Thread(target=listen, args=(n, c), daemon=True)
               for n, c in (("operator", True), ("intruder", True), ("plain", None))]
    threads.append(threading.Thread(target=send, daemon=True))
    for t in threads:
        t.start()
    rc = main(["serve", "--bind", frames_ep, "--events", events_ep, "--record", str(rec), "--backend", "onnx",
               "--curve-secret", str(keys / "analyzer.key_secret"), "--curve-allow", str(pubs),
               "--events-curve-allow", str(subs), "--events-log", str(tmp_path / "events.jsonl"),
               "--no-dashboard", "--quiet", "--until-end", "--duration-s", "300"])     # (300 s: a hang guard)
    logged = (tmp_path / "events.jsonl").read_text().splitlines()
    wait_until(lambda: len(got["operator"]) >= len(logged))     # the last events still on their way
    stop.set()
    for t in threads:
        t.join(10)
    assert rc == 0
    recorded = [(f.series, f.seq) for f in iter_frames(rec)]
    assert recorded == [("trusted", s) for s in range(len(frames))]       # only the allow-listed publisher
    assert RecordingReader(rec).scan().complete
    assert logged, "no event was raised"
    assert len(got["operator"]) == len(logged) and {e["kind"] for e in got["operator"]} >= {"si_3_to_4"}
    assert got["intruder"] == [] and got["plain"] == []


def test_serve_events_curve_options_are_checked(tmp_path, capsys):
    keys, _pubs, subs = _keys(tmp_path)
    assert main(["serve", "--connect", "tcp://127.0.0.1:5", "--events-curve-allow", str(subs), "--no-dashboard"]) == 2
    assert "events-curve-secret" in capsys.readouterr().err


def _lan_address() -> str | None:
    """This machine's address on its network (not loopback), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))            # no packet is sent (UDP connect)
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_dashboard_is_local_by_default():
    """serve and demo default to 127.0.0.1; the server is then unreachable on the LAN address."""
    from dashboard.cli import dashboard_config
    from stemwatch.config import Config

    parser = build_parser()
    for cmd in (["serve", "--connect", "tcp://x:1"], ["demo"]):     # the effective address (option or config)
        assert dashboard_config(Config(), parser.parse_args(cmd)).dashboard.address == "127.0.0.1"
    assert DashboardConfig().address == "127.0.0.1" and DashboardConfig().allow_origins == ()
    lan = _lan_address()
    if lan is None:
        pytest.skip("no non-loopback address on this machine")
    with DashboardServer(DashboardConfig(port=0)) as dash:
        assert urllib.request.urlopen(dash.url, timeout=10).status == 200
        with pytest.raises(OSError):                 # connection refused: not listening there
            socket.create_connection((lan, dash.port), timeout=3).close()


def test_dashboard_opened_to_the_network_needs_allowed_origins():
    """Listening on all interfaces (--address 0.0.0.0) is not enough: the page and its websocket are
    served to another computer only for an allowed origin (--allow-origin HOST:PORT)."""
    lan = _lan_address()
    if lan is None:
        pytest.skip("no non-loopback address on this machine")
    port = free_tcp_port()
    with DashboardServer(DashboardConfig(port=port, address="0.0.0.0")) as dash:
        assert urllib.request.urlopen(dash.url, timeout=10).status == 200            # locally: yes
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"http://{lan}:{port}/", timeout=10)              # from the LAN: no
        assert ws_status(lan, port, f"http://{lan}:{port}") == 403
    port = free_tcp_port()
    with DashboardServer(DashboardConfig(port=port, address="0.0.0.0", allow_origins=(f"{lan}:{port}",))) as dash:
        page = urllib.request.urlopen(f"http://{lan}:{port}/", timeout=10)
        assert page.status == 200 and b"bokeh" in page.read().lower()
        assert ws_status(lan, port, "http://evil.example") == 403


def _raw_get(port: int, host: str, origin: str | None = None) -> int:
    """HTTP status of GET / on 127.0.0.1:port with this Host header (as after a DNS rebinding)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        extra = f"Origin: {origin}\r\n" if origin else ""
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        return int(s.recv(64).split()[1])


def test_localhost_dashboard_refuses_other_host_names():
    """DNS rebinding: a web page at evil.example whose name is made to resolve to 127.0.0.1 is
    same-origin with itself; the dashboard answers only to its own local names."""
    with DashboardServer(DashboardConfig(port=0)) as dash:
        assert _raw_get(dash.port, f"127.0.0.1:{dash.port}") == 200
        assert _raw_get(dash.port, f"localhost:{dash.port}") == 200
        assert _raw_get(dash.port, f"evil.example:{dash.port}", f"http://evil.example:{dash.port}") == 403
