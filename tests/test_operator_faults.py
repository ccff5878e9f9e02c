"""Faults an ordinary operator causes (issue 14): oversized frames, no receiver, reruns of a
series, overwritten recordings, half-configured security, damaged input, loss accounting.

Timeouts here are hang guards only (generous), never performance claims."""

import os
import time

import numpy as np
import pytest

from stemwatch.config import StreamConfig
from streamer import Publisher, Receiver

TCP = "tcp://127.0.0.1:*"


def wait_until(pred, timeout=20.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ----------------------------------------------------------------------------- 1: oversized frame
@pytest.mark.parametrize("kind", ["PUSH", "PUB"])
def test_one_oversized_frame_is_refused_and_the_link_recovers(kind):
    """A frame twice the receiver's limit (the 64 MiB vs 32 MiB case, scaled down) is refused
    with its reason, and every later valid frame arrives (PUSH and SUB)."""
    limit = 1 << 20
    pub = Publisher(TCP, socket_type=kind, send_timeout_s=10)
    rx = Receiver(pub.endpoint, StreamConfig(max_frame_bytes=limit),
                  socket_type="PULL" if kind == "PUSH" else "SUB").start()
    try:
        assert wait_until(lambda: rx.stats()["peers_connected"] >= 1)
        pub.start_series("s", (32, 32), "float32", 0.1)
        assert pub.send_frame(np.zeros((512, 1024), np.float32))         # 2 MiB > 1 MiB
        for _ in range(40):
            assert pub.send_frame(np.ones((32, 32), np.float32))
            time.sleep(0.002)
        assert wait_until(lambda: rx.stats()["frames_received"] == 40)
        st = rx.stats()
        assert st["malformed"] == {"frame_too_large": 1}
    finally:
        rx.stop()
        pub.close()


def test_a_part_above_the_socket_limit_does_not_end_a_connecting_receiver():
    """Beyond the socket's own limit libzmq drops the connection as a protocol error and would
    never reconnect: the receiver reconnects, and later frames arrive."""
    from streamer.receiver import socket_limit_bytes

    limit = 64 << 10
    pub = Publisher(TCP, send_timeout_s=10)
    rx = Receiver(pub.endpoint, StreamConfig(max_frame_bytes=limit)).start()
    try:
        assert wait_until(lambda: rx.stats()["peers_connected"] >= 1)
        pub.start_series("s", (32, 32), "float32", 0.1)
        big = np.zeros((socket_limit_bytes(limit) // 4096 + 8, 1024), np.float32)
        assert pub.send_frame(big)
        assert wait_until(lambda: rx.stats()["reconnects"] >= 1 and rx.stats()["peers_connected"] >= 2)
        for _ in range(20):
            assert pub.send_frame(np.ones((32, 32), np.float32))
        assert wait_until(lambda: rx.stats()["frames_received"] == 20)
    finally:
        rx.stop()
        pub.close()


def test_publisher_refuses_locally_a_frame_above_the_limit_it_was_given():
    pub = Publisher(TCP, max_frame_bytes=1000, blocking=False)
    try:
        pub.start_series("s", (32, 32), "float32", 0.1)
        assert pub.send_frame(np.zeros((32, 32), np.float32)) is False        # 4096 bytes > 1000
        assert pub.refused == 1 and pub.dropped >= 1 and pub.next_seq == 1
        assert Publisher.RECEIVER_DEFAULT_MAX_FRAME_BYTES == StreamConfig().max_frame_bytes
    finally:
        pub.close()


# ----------------------------------------------------------------------------- 2: never hang
def test_publisher_without_receiver_times_out_with_a_clear_error():
    pub = Publisher(TCP, send_timeout_s=0.3)          # the default is 2 s; no receiver at all
    try:
        with pytest.raises(TimeoutError, match="receiver"):
            pub.start_series("s", (8, 8), "uint8", 0.1)
        assert pub.send_frame(np.zeros((8, 8), np.uint8)) is False
        assert pub.dropped == 1
    finally:
        pub.close()


def test_publisher_default_send_timeout_is_finite():
    import inspect

    from streamer.publisher import DEFAULT_SEND_TIMEOUT_S

    assert inspect.signature(Publisher).parameters["send_timeout_s"].default == DEFAULT_SEND_TIMEOUT_S == 2.0
    pub = Publisher(TCP)
    try:
        assert pub._sock.sndtimeo == 2000
    finally:
        pub.close()


def test_publisher_non_blocking_mode_drops_and_counts():
    pub = Publisher(TCP, blocking=False, send_timeout_s=None)      # no receiver: nothing may wait
    try:
        assert pub.start_series("s", (8, 8), "uint8", 0.1) is False
        for _ in range(5):
            assert pub.send_frame(np.zeros((8, 8), np.uint8)) is False
        assert pub.dropped == 6 and pub.sent == 0
    finally:
        pub.close()


def test_readme_snippet_as_written_leaves_no_series_stalled():
    """``with Publisher(...)`` sends ``end`` on exit: the receiver sees the series ended."""
    rx = Receiver(TCP, StreamConfig(stall_timeout_s=0.5), bind=True).start()
    try:
        with Publisher(rx.endpoint, bind=False) as pub:
            pub.start_series("s1", shape=(16, 16), dtype="float32", pixel_size_A=0.1, frame_time_s=0.2)
            for image in np.zeros((3, 16, 16), np.float32):
                pub.send_frame(image)
        assert wait_until(lambda: rx.stats()["series_ended"] == 1)
        time.sleep(0.8)                                # longer than the stall timeout
        st = rx.stats()
        assert st["frames_received"] == 3 and st["stalls"] == 0 and not st["stalled"] and st["gap_count"] == 0
    finally:
        rx.stop()


# ----------------------------------------------------------------------------- 3: a rerun resets
def test_a_restarted_series_id_resets_tracking():
    """An acquisition script run twice with the same series id: the second run is tracked from
    scratch (no spurious events from matching it against the first run's atoms)."""
    from _track_lattice import lattice_scene, render_frame

    from engine.pipeline import Pipeline
    from stemwatch.config import Config

    ps, size = 0.1, 160

    def movie(seed, shift_A):
        pts, sp = lattice_scene(size, ps, n_si=3, seed=seed)
        rng = np.random.default_rng(seed)
        return [render_frame((pts + shift_A + rng.normal(0, 0.03, pts.shape)) / ps, sp, (size, size), ps, rng=rng)
                for _ in range(5)]

    runs = [movie(1, 0.0), movie(2, np.array([0.7, 0.4]))]      # another place on the sample
    rx = Receiver(TCP, StreamConfig(), bind=True).start()
    pipe = Pipeline(Config().replace(inference={"backend": "onnx"}))
    results = []
    try:
        for frames in runs:
            with Publisher(rx.endpoint, bind=False) as pub:          # the same script, run twice
                pub.start_series("scan", (size, size), "float32", ps, frame_time_s=0.2)
                for img in frames:
                    pub.send_frame(img.astype(np.float32))
                    f = rx.latest(timeout_s=30)
                    assert f is not None
                    results.append(pipe.process(f))
    finally:
        rx.stop()
        pipe.close()
    assert rx.stats()["frames_received"] == 10
    second = results[5:]
    assert all(r.error is None for r in results)
    assert sum(len(r.events) for r in second) == 0, [e.kind for r in second for e in r.events]
    first_ids = {int(i) for r in results[:5] for i in r.track_ids}
    assert first_ids.isdisjoint(int(i) for i in second[0].track_ids)   # new tracks, never continued
