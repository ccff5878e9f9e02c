"""The forwarder behind the Nion Swift plug-in, without Nion: settings, series, drops (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.forwarder import Forwarder, ForwarderSettings, ScanFrame, load_settings
from streamer.receiver import Receiver
from streamer.recording import RecordingWriter, iter_frames

from _wait import wait_until


def _frame(index, channel="HAADF", px=0.5, shape=(32, 40), t=1.7e9):
    data = np.full(shape, index, np.float32)
    return ScanFrame(data=data, channel=channel, pixel_size_A=px, t_acquired=t + index * 0.1, frame_index=index,
                     dwell_s=2e-6, fov_nm=shape[1] * px / 10, high_tension_V=60000.0, frame_time_s=0.1)


_wait = wait_until            # a hang guard (never shorter than tests/_wait.py's MIN_WAIT_S)


def test_settings_file(tmp_path):
    assert load_settings(tmp_path / "absent.json") == ForwarderSettings()
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"endpoint": "tcp://*:6000", "channel": "MAADF", "queue_frames": 3}))
    s = load_settings(p)
    assert (s.endpoint, s.channel, s.queue_frames, s.bind) == ("tcp://*:6000", "MAADF", 3, True)
    p.write_text(json.dumps({"chanel": "MAADF"}))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['chanel'\]"):
        load_settings(p)
    p.write_text(json.dumps({"queue_frames": 0}))
    with pytest.raises(ValueError, match="queue_frames must be >= 1"):
        load_settings(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON"):
        load_settings(p)


def test_new_series_on_pixel_size_or_channel_change_and_seq_follows_the_frame_index(tmp_path):
    fw = Forwarder(ForwarderSettings(endpoint="tcp://127.0.0.1:*", queue_frames=32, send_timeout_s=5.0))
    rec = tmp_path / "r.swrec"
    writer = RecordingWriter(rec)
    rx = Receiver(fw.endpoint, recorder=writer).start()
    try:
        assert _wait(lambda: rx.stats()["peers_connected"] >= 1)
        plan = [_frame(10), _frame(11), _frame(13),                       # 12 never arrived: a gap
                _frame(14, px=0.25), _frame(15, px=0.25),                  # zoomed: new series
                _frame(16, channel="MAADF", px=0.25),                      # other channel: new series
                _frame(3, channel="MAADF", px=0.25)]                       # Swift restarted: new series
        for f in plan:
            assert fw.submit(f)
        assert _wait(lambda: fw.stats()["sent"] == len(plan))
        assert _wait(lambda: rx.stats()["frames_received"] == len(plan))
    finally:
        fw.close()
        rx.stop()
        writer.close()
    got = list(iter_frames(rec))
    series = [f.series for f in got]
    assert len(set(series)) == 4
    assert [f.seq for f in got] == [0, 1, 3, 0, 1, 0, 0]
    assert [f.meta["swift_first_frame_index"] + f.seq for f in got] == [10, 11, 13, 14, 15, 16, 3]
    assert [int(f.data[0, 0]) for f in got] == [10, 11, 13, 14, 15, 16, 3]
    assert [f.pixel_size_A for f in got] == [0.5] * 3 + [0.25] * 4
    assert got[5].meta["channel"] == "MAADF" and got[0].meta["high_tension_V"] == 60000.0
    assert got[0].t_acquired == pytest.approx(1.7e9 + 1.0)


def test_a_stuck_socket_never_blocks_submit_and_drops_are_counted():
    # nobody connects: the PUSH socket cannot take frames, each send waits send_timeout_s
    fw = Forwarder(ForwarderSettings(endpoint="tcp://127.0.0.1:*", queue_frames=2, send_timeout_s=0.5,
                                     heartbeat_s=0))
    try:
        accepted = [fw.submit(_frame(i)) for i in range(50)]      # returns at once: nothing waits on the socket
        assert all(accepted)
        st = fw.stats()
        assert st["submitted"] == 50 and st["queued"] <= 2
        assert st["dropped_queue"] >= 50 - 2 - 1                  # all but the queue and the one being sent
    finally:
        fw.close(timeout_s=10.0)
    st = fw.stats()
    assert st["sent"] == 0 and st["dropped"] == 50


def test_subscan_and_invalid_frames_are_not_sent():
    fw = Forwarder(ForwarderSettings(endpoint="tcp://127.0.0.1:*", send_timeout_s=0.2, heartbeat_s=0))
    try:
        sub = _frame(1)
        sub.subscan = True
        assert not fw.submit(sub)
        bad = _frame(2, px=float("nan"))
        assert not fw.submit(bad)
        st = fw.stats()
        assert st["skipped_subscan"] == 1 and st["skipped_invalid"] == 1 and st["submitted"] == 0
    finally:
        fw.close()


def test_an_endpoint_that_cannot_be_opened_is_reported_not_raised():
    fw = Forwarder(ForwarderSettings(endpoint="tcp://no-such-host.invalid:1", bind=True))
    try:
        assert fw.stats()["error"] and not fw.submit(_frame(0))
    finally:
        fw.close()
