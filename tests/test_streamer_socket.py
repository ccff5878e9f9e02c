"""Publisher -> Receiver over real ZeroMQ sockets on loopback (tcp and ipc)."""

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import msgpack
import numpy as np
import pytest
import zmq

from stemwatch.config import StreamConfig
from streamer import Publisher, Receiver
from streamer.protocol import ALLOWED_DTYPES, encode_frame, encode_start
from _wait import wait_until

TCP = "tcp://127.0.0.1:*"


class ListRecorder:
    """Keeps the exact bytes of every message handed to the recorder."""

    def __init__(self):
        self.items = []

    def write(self, parts, t_arrival):
        self.items.append(([bytes(getattr(p, "buffer", p)) for p in parts], t_arrival))


@pytest.fixture
def ipc_endpoint():
    d = tempfile.mkdtemp(prefix="sw")     # short path: ipc paths are limited to ~100 characters
    yield f"ipc://{d}/frames.ipc"
    try:
        os.unlink(f"{d}/frames.ipc")
    except OSError:
        pass
    os.rmdir(d)


def _pair(endpoint, **rx_kw):
    pub = Publisher(endpoint)
    cfg = rx_kw.pop("cfg", StreamConfig())
    rx = Receiver(pub.endpoint, cfg, **rx_kw).start()
    return pub, rx


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_bit_exact_round_trip_every_dtype(transport, ipc_endpoint):
    endpoint = TCP if transport == "tcp" else ipc_endpoint
    rec = ListRecorder()
    pub, rx = _pair(endpoint, recorder=rec)
    try:
        rng = np.random.default_rng(0)
        meta = {"microscope": "test", "kV": 60}
        start = encode_start("s", (33, 17), "<f4", 0.09, 1e-6, 0.3, meta)
        pub.start_series("s", (33, 17), "<f4", 0.09, dwell_s=1e-6, frame_time_s=0.3, meta=meta)
        sent = []
        for i, dt in enumerate(sorted(ALLOWED_DTYPES)):
            arr = rng.integers(0, 256, 33 * 17 * np.dtype(dt).itemsize, dtype=np.uint8).view(dt).reshape(33, 17)
            t_acq = 1.7e9 + i * 0.25
            pub.send_frame(arr, t_acquired=t_acq)
            f = rx.latest(timeout_s=60)
            assert f is not None, dt
            assert f.data.dtype.str == arr.dtype.str and f.data.tobytes() == arr.tobytes()
            assert (f.series, f.seq, f.t_acquired, f.pixel_size_A) == ("s", i, t_acq, 0.09)
            assert f.meta["microscope"] == "test" and f.meta["frame_time_s"] == 0.3
            sent.append(encode_frame("s", i, t_acq, arr, 0.09))
        assert wait_until(lambda: len(rec.items) == 1 + len(sent))
        hdr0 = msgpack.unpackb(rec.items[0][0][0])
        assert {k: v for k, v in hdr0.items() if k != "t_sent"} == \
               {k: v for k, v in msgpack.unpackb(start[0]).items() if k != "t_sent"}
        for (parts, _), want in zip(rec.items[1:], sent):   # headers and pixels byte for byte
            assert parts[0] == want[0] and parts[1] == want[1].tobytes()
        s = rx.stats()
        assert s["frames_received"] == len(sent) and s["malformed_total"] == 0 and s["gaps"] == []
    finally:
        rx.stop()
        pub.close()


def test_gaps_reported_exactly():
    pub, rx = _pair(TCP)
    try:
        pub.start_series("g", (8, 8), "uint16", 0.1)
        a = np.zeros((8, 8), np.uint16)
        sent = [s for s in range(30) if not (10 <= s <= 12 or s == 21)]
        for s in sent:
            pub.send_frame(a, seq=s)
        pub.next_seq = 33                       # the end message says 33 frames: 30..32 never came
        pub.end_series()
        assert wait_until(lambda: rx.stats()["series_ended"] == 1)
        st = rx.stats()
        assert st["gaps"] == [["g", 10, 12], ["g", 21, 21], ["g", 30, 32]]
        assert st["missing_frames"] == 3 + 1 + 3 and st["gap_count"] == 3
        assert st["frames_received"] == len(sent) and st["seq_rewinds"] == 0
    finally:
        rx.stop()
        pub.close()


def test_latest_hands_newest_and_counts_drops():
    pub, rx = _pair(TCP)
    try:
        pub.start_series("d", (16, 16), "float32", 0.1)
        for i in range(50):
            pub.send_frame(np.full((16, 16), i, np.float32))
        assert wait_until(lambda: rx.stats()["frames_received"] == 50)
        f = rx.latest(timeout_s=60)
        assert f.seq == 49 and f.data[0, 0] == 49
        assert rx.latest(timeout_s=0.05) is None           # nothing new
        st = rx.stats()
        assert st["delivered_for_analysis"] == 1 and st["dropped_for_analysis"] == 49
    finally:
        rx.stop()
        pub.close()


def test_new_series_without_end_and_stale_messages(ipc_endpoint):
    rec = ListRecorder()
    pub, rx = _pair(ipc_endpoint, recorder=rec)
    try:
        a = np.ones((8, 8), np.uint8)
        pub.start_series("A", (8, 8), "uint8", 0.1)
        for _ in range(5):
            pub.send_frame(a)
        pub.start_series("B", (8, 8), "uint8", 0.2)      # no end for A
        pub.send_frame(a)
        # a late frame of A (e.g. a second, stale publisher) must be skipped, not recorded
        pub._sock.send_multipart(encode_frame("A", 5, 0.0, a, 0.1), copy=True)
        pub.send_frame(a)
        assert wait_until(lambda: rx.stats()["frames_received"] == 7 and rx.stats()["malformed_total"] == 1)
        st = rx.stats()
        assert st["series"] == "B" and st["series_changes"] == 1 and st["series_aborted"] == 1
        assert st["malformed"] == {"stale_series": 1} and st["gaps"] == []
        f = rx.latest(timeout_s=60)
        assert (f.series, f.seq, f.pixel_size_A) == ("B", 1, 0.2)
        assert wait_until(lambda: len(rec.items) == 2 + 5 + 2)
        assert all(msgpack.unpackb(p[0]).get("series") != "A" or msgpack.unpackb(p[0])["seq"] < 5
                   for p, _ in rec.items if msgpack.unpackb(p[0])["type"] == "frame")
    finally:
        rx.stop()
        pub.close()


def test_frames_after_end_are_stale_and_a_new_start_reopens():
    pub, rx = _pair(TCP)
    try:
        a = np.zeros((4, 4), np.float64)
        pub.start_series("S", (4, 4), "float64", 0.1)
        pub.send_frame(a)
        pub.end_series()
        pub._sock.send_multipart(encode_frame("S", 1, 0.0, a, 0.1), copy=True)
        assert wait_until(lambda: rx.stats()["malformed"].get("stale_series") == 1)
        pub.start_series("S", (4, 4), "float64", 0.1)     # explicitly restarted: accepted again
        pub.send_frame(a)
        assert wait_until(lambda: rx.stats()["frames_received"] == 2)
        assert rx.stats()["series"] == "S"
    finally:
        rx.stop()
        pub.close()


def test_stall_detected_and_cleared():
    pub, rx = _pair(TCP, cfg=StreamConfig(stall_timeout_s=0.2, poll_interval_s=0.01))
    try:
        pub.start_series("st", (4, 4), "uint16", 0.1)
        pub.send_frame(np.zeros((4, 4), np.uint16))
        assert wait_until(lambda: rx.stats()["stalled"], timeout=3)
        assert rx.stats()["stalls"] == 1
        pub.send_frame(np.zeros((4, 4), np.uint16))
        assert wait_until(lambda: not rx.stats()["stalled"])
        pub.end_series()
        # no series open: idle is not a stall. Checked once the end has arrived (on a busy machine it
        # may come after another stall_timeout_s), over several stall timeouts
        assert wait_until(lambda: rx.stats()["series_ended"] == 1)
        stalls = rx.stats()["stalls"]
        time.sleep(4 * 0.2)
        assert stalls >= 1 and rx.stats()["stalls"] == stalls and not rx.stats()["stalled"]
    finally:
        rx.stop()
        pub.close()


def test_malformed_messages_counted_by_reason_never_recorded():
    rec = ListRecorder()
    rx = Receiver(TCP, StreamConfig(max_frame_side_px=1024), bind=True, recorder=rec).start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(rx.endpoint)
    try:
        good = encode_frame("m", 0, 1.0, np.zeros((4, 4), np.float32), 0.1)
        h = msgpack.unpackb(good[0])
        bad = [
            [b"\xc1"],                                                            # bad_msgpack
            [msgpack.packb({**h, "version": 9}), good[1]],                        # unknown_version
            [msgpack.packb({**h, "type": "blob"}), good[1]],                      # unknown_type
            [msgpack.packb({k: v for k, v in h.items() if k != "seq"}), good[1]],  # missing_field:seq
            [msgpack.packb({**h, "shape": [4, 5]}), good[1]],                      # size_mismatch
            [msgpack.packb({**h, "shape": [100000, 100000]}), b""],               # shape_too_large
            [msgpack.packb({**h, "dtype": "<c8"}), good[1]],                       # unknown_dtype
            [good[0]],                                                            # wrong_part_count
        ]
        for parts in bad:
            push.send_multipart(parts)
        push.send_multipart(good)
        assert wait_until(lambda: rx.stats()["frames_received"] == 1)
        st = rx.stats()
        assert st["malformed"] == {"bad_msgpack": 1, "unknown_version": 1, "unknown_type": 1,
                                   "missing_field:seq": 1, "size_mismatch": 1, "shape_too_large": 1,
                                   "unknown_dtype": 1, "wrong_part_count": 1}
        assert wait_until(lambda: len(rec.items) == 1)
        assert rec.items[0][0][0] == good[0]
    finally:
        push.close(0)
        ctx.term()
        rx.stop()


def test_pub_sub():
    pub = Publisher(TCP, socket_type="PUB")
    rx = Receiver(pub.endpoint, StreamConfig(), socket_type="SUB").start()
    try:
        time.sleep(0.3)                               # PUB drops messages until SUB has joined
        pub.start_series("p", (4, 4), "uint8", 0.1)
        pub.send_frame(np.arange(16, dtype=np.uint8).reshape(4, 4))
        f = rx.latest(timeout_s=60)
        assert f is not None and f.data[3, 3] == 15
    finally:
        rx.stop()
        pub.close()


PUBLISHER_SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    from streamer import Publisher
    endpoint, first = sys.argv[1], int(sys.argv[2])
    with Publisher(endpoint) as pub:
        pub.start_series("live", (64, 64), "uint16", 0.1, frame_time_s=0.005)
        seq = first
        while True:
            pub.send_frame(np.full((64, 64), seq % 65536, np.uint16), seq=seq)
            seq += 1
            time.sleep(0.005)
""")


def test_publisher_killed_and_restarted_mid_series(ipc_endpoint, tmp_path):
    script = tmp_path / "pub.py"
    script.write_text(PUBLISHER_SCRIPT)
    rec = ListRecorder()
    rx = Receiver(ipc_endpoint, StreamConfig(), recorder=rec).start()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen([sys.executable, str(script), ipc_endpoint, "0"], env=env)
    try:
        assert wait_until(lambda: rx.stats()["frames_received"] >= 20, timeout=20)
        p.kill()
        p.wait()
        time.sleep(0.2)
        got = rx.stats()["frames_received"]
        resume = got + 10                       # the restarted publisher skips some seqs
        p = subprocess.Popen([sys.executable, str(script), ipc_endpoint, str(resume)], env=env)
        assert wait_until(lambda: rx.stats()["frames_received"] >= got + 20, timeout=20)
        p.kill()
        p.wait()
        st = rx.stats()
        assert st["restarts"] == 1 and st["series_started"] == 1 and st["malformed_total"] == 0
        assert st["seq_rewinds"] == 0
        last = max(msgpack.unpackb(parts[0]).get("seq", -1) for parts, _ in rec.items)
        # every seq up to the last one is either received or inside a reported gap
        assert st["frames_received"] + st["missing_frames"] == last + 1
        assert ["live", got, resume - 1] in st["gaps"]
        f = rx.latest(timeout_s=60)
        assert f.seq >= resume and f.data[0, 0] == f.seq % 65536
    finally:
        p.kill()
        rx.stop()


def test_restart_from_seq_zero_is_a_rewind_not_a_gap():
    pub, rx = _pair(TCP)
    try:
        a = np.zeros((4, 4), np.uint8)
        pub.start_series("r", (4, 4), "uint8", 0.1)
        for _ in range(5):
            pub.send_frame(a)
        pub.start_series("r", (4, 4), "uint8", 0.1)   # same series again: seq restarts at 0
        for _ in range(3):
            pub.send_frame(a)
        assert wait_until(lambda: rx.stats()["frames_received"] == 8)
        st = rx.stats()
        assert st["restarts"] == 1 and st["seq_rewinds"] == 1 and st["gaps"] == []
    finally:
        rx.stop()
        pub.close()


def test_oversized_part_refused_by_libzmq_and_receiver_carries_on():
    rx = Receiver(TCP, StreamConfig(max_frame_bytes=1 << 20), bind=True).start()
    ctx = zmq.Context()
    try:
        hostile = ctx.socket(zmq.PUSH)
        hostile.connect(rx.endpoint)
        hostile.send_multipart([b"x", bytes(8 << 20)])            # 8 MiB part, limit 1 MiB
        assert wait_until(lambda: rx.stats()["peer_disconnects"] >= 1)
        hostile.close(0)
        assert rx.stats()["messages"] == 0
        pub = Publisher(rx.endpoint, bind=False)
        pub.start_series("ok", (8, 8), "uint8", 0.1)
        pub.send_frame(np.zeros((8, 8), np.uint8))
        assert wait_until(lambda: rx.stats()["frames_received"] == 1)
        pub.close()
    finally:
        ctx.term()
        rx.stop()


def test_a_handshake_that_completes_at_once_is_still_counted(monkeypatch):
    """The receiver's connection monitor is attached before it connects: a handshake that finished
    before the monitor existed went uncounted (``peers_connected`` stayed 0 and anything waiting for
    the peer waited for ever; seen under pytest-xdist). Here the monitor is made slow to attach."""
    real = zmq.Socket.get_monitor_socket

    def slow(self, *a, **kw):
        time.sleep(0.5)                        # the publisher's handshake completes meanwhile
        return real(self, *a, **kw)

    monkeypatch.setattr(zmq.Socket, "get_monitor_socket", slow)
    pub = Publisher(TCP, send_timeout_s=10)
    rx = Receiver(pub.endpoint).start()
    try:
        assert wait_until(lambda: rx.stats()["peers_connected"] >= 1)
    finally:
        rx.stop()
        pub.close()
