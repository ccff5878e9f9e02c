"""The live service over real ZeroMQ sockets on loopback: frames in, events out (PUB), listeners,
status, pause, recording switched on and off while live, thresholds changed while live."""

import time

import msgpack
import numpy as np
import pytest
import zmq

from engine.service import EVENT_TOPIC, LiveService
from engine.types import SI
from stemwatch.config import Config
from streamer import Publisher
from streamer.recording import RecordingReader, iter_frames

from _track_lattice import lattice_scene, render_frame
from _wait import wait_until

PS = 0.1
SIZE = 160


_wait = wait_until            # a hang guard (never shorter than tests/_wait.py's MIN_WAIT_S)


@pytest.fixture
def scene():
    pts, sp = lattice_scene(SIZE, PS, n_si=1, seed=3)
    # a C next to the Si becomes Si half-way through the series (a dopant appears there)
    si = np.flatnonzero(sp == SI)[0]
    d = np.linalg.norm(pts - pts[si], axis=1)
    far = np.flatnonzero((d > 5.0) & (d < 7.0))[0]
    rng = np.random.default_rng(0)

    def frame(t):
        s = sp.copy()
        if t >= 8:
            s[far] = SI
        xy = (pts + np.array([0.05, 0.02]) * t + rng.normal(0, 0.03, pts.shape)) / PS
        return render_frame(xy, s, (SIZE, SIZE), PS, rng=rng)
    return frame


def test_live_service_end_to_end(tmp_path, scene):
    cfg = Config().replace(inference={"backend": "onnx"})
    pub = Publisher("tcp://127.0.0.1:*", bind=True)
    svc = LiveService(cfg, pub.endpoint, events_endpoint="tcp://127.0.0.1:*")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    mon = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sub.connect(svc.events_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, EVENT_TOPIC)
    seen = []
    statuses = []
    svc.add_listener(lambda r, s: (seen.append(r), statuses.append(s)))
    svc.add_listener(lambda r, s: 1 / 0)          # a broken listener changes nothing
    try:
        svc.start()
        # the SUB is connected before any event (its subscription follows the handshake at once): waited
        # for, not slept for (a hang guard)
        assert mon.poll(60_000), "the events subscriber never connected"
        sub.disable_monitor()
        time.sleep(0.3)                             # and its subscription has reached the PUB
        pub.start_series("live-1", (SIZE, SIZE), np.float32, PS, frame_time_s=0.05)
        for t in range(14):                         # in step with analysis: on a busy machine too, every
            pub.send_frame(scene(t))                # frame is analysed (no load-dependent drops)
            assert _wait(lambda: seen and seen[-1].seq == t, 120), [r.seq for r in seen]

        # events on the PUB socket are exactly the events the listeners saw
        got = []
        n_pub = svc.status()["events_published"]   # all published before the last listener call
        while (len(got) < n_pub and sub.poll(60_000)) or sub.poll(200):   # every one, then any extra
            topic, body = sub.recv_multipart()
            assert topic == EVENT_TOPIC
            got.append(msgpack.unpackb(body))
        listened = [(r.series, e.frame, e.kind, e.atom_id) for r in seen for e in r.events]
        assert sorted((g["series"], g["frame"], g["kind"], g["atom_id"]) for g in got) == sorted(listened)
        assert all(g["version"] == 2 and g["type"] == "event" for g in got)
        assert all(g["category"] in ("transformation", "bookkeeping") for g in got)
        appeared = [g for g in got if g["kind"] == "si_appeared" and g["frame"] >= 8]
        assert appeared, got
        assert all(g["latency_s"] >= 0 for g in got)

        st = svc.status()
        assert st["series"] == "live-1" and st["frames_received"] == 14
        assert st["frames_analysed"] == len(seen) and st["frames_analysed"] + st["dropped_for_analysis"] == 14
        assert st["listener_errors"] == len(seen)
        assert "ONNX Runtime" in st["backend"]
        lat = st["latency_s"]
        assert {"received", "started", "network", "atoms_graph", "tracking"} <= set(lat)
        assert 0 <= lat["started"]["p50"] <= lat["tracking"]["p50"] <= lat["tracking"]["p99"]   # speed: bench
        assert statuses[-1]["frames_analysed"] >= 1

        # pause: frames are received (and would be recorded) but not analysed
        svc.set_paused(True)
        n0 = svc.status()["frames_analysed"]
        for t in range(14, 18):
            pub.send_frame(scene(t))
            time.sleep(0.03)
        assert _wait(lambda: svc.status()["frames_received"] == 18)
        assert _wait(lambda: svc.status()["paused_skipped"] >= 1)     # the loop took a frame while paused
        st = svc.status()
        assert st["paused"] and st["frames_analysed"] == n0 and st["paused_skipped"] >= 1
        svc.set_paused(False)

        # record while live: the file starts with the series header, then every frame
        rec = tmp_path / "live.swrec"
        svc.start_recording(rec)
        assert svc.status()["recorder"]["recording"]
        for t in range(18, 21):
            pub.send_frame(scene(t))
            time.sleep(0.05)
        assert _wait(lambda: svc.status()["recorder"]["written"] == 4), (svc.status()["recorder"],
                                                                          svc.status()["frames_received"])
        svc.stop_recording()
        assert not svc.status()["recorder"]["recording"]
        first = next(iter(RecordingReader(rec)))[0]
        assert msgpack.unpackb(bytes(first[0]))["type"] == "start"
        assert [f.seq for f in iter_frames(rec)] == [18, 19, 20]

        # thresholds while live
        svc.update_config(events={"k_of_n": (3, 4), "min_confidence": 0.2})
        assert svc.status()["config"] == {"k_of_n": [3, 4], "min_confidence": 0.2}
        pub.send_frame(scene(21))
        assert _wait(lambda: svc.pipeline.tracker.ecfg.k_of_n == (3, 4))
        with pytest.raises(ValueError):
            svc.update_config(k_of_n=(5, 4))
        with pytest.raises(TypeError):
            svc.update_config(nonsense=1)
    finally:
        svc.stop()
        pub.close()
        sub.close(0)
        mon.close(0)
        ctx.term()


def test_recording_is_open_before_the_first_message_can_arrive(tmp_path, monkeypatch):
    """With record_path, the file is open before the receiver starts: a message arriving at once is
    recorded, never silently skipped (the overload test once lost frame 0 to this window)."""
    svc = LiveService(Config().replace(inference={"backend": "onnx"}), "tcp://127.0.0.1:1",
                      record_path=tmp_path / "r.swrec")
    seen = []
    real_start = svc.receiver.start
    monkeypatch.setattr(svc.receiver, "start", lambda: (seen.append(svc.recorder.recording), real_start())[1])
    try:
        svc.start()
    finally:
        svc.stop()
    assert seen == [True]


def test_hold_for_next_frame_only_when_the_stream_outpaces_frame_by_frame_analysis():
    """engine.service.hold_for_next_s: a stream well below frame-by-frame capacity is never held (lowest
    latency); one from ~91 % of it on waits for the next frame until 1.25 periods after the held one arrived (its
    network then runs beside this frame's chemistry), at most MAX_HOLD_S; unknown figures never hold."""
    from engine.service import HOLD_PERIODS, MAX_HOLD_S, hold_for_next_s

    assert hold_for_next_s(0.100, 0.028, 0.0) == 0.0                  # 10 Hz, 28 ms a frame: keep up as is
    assert hold_for_next_s(0.036, 0.030, 0.0) == 0.0                  # 83 % of frame-by-frame capacity
    # as fast as frame-by-frame analysis: no margin for jitter (frames would queue and be dropped): held
    assert hold_for_next_s(0.030, 0.030, 0.005) == pytest.approx(HOLD_PERIODS * 0.030 - 0.005)
    assert hold_for_next_s(0.025, 0.034, 0.005) == pytest.approx(HOLD_PERIODS * 0.025 - 0.005)
    assert hold_for_next_s(0.025, 0.034, 0.040) == 0.0                # the next frame is late: finish this one
    assert hold_for_next_s(1.0, 5.0, 0.0) == MAX_HOLD_S
    for p, c in ((float("nan"), 0.03), (0.02, float("nan")), (0.0, 0.03), (0.02, 0.0)):
        assert hold_for_next_s(p, c, 0.0) == 0.0
