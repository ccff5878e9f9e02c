"""Overload (issue 8, criterion 2): the microscope sends 100 frames/s of 1024x1024 (uint16, 200 MB/s),
far faster than analysis. The analyzer stays on the newest frame, its latency from ``t_acquired``
stays bounded (p99 under two frame-analysis times), every frame it skips is counted and shown in
the status, and the recorder either keeps up or says exactly how far behind it is.
"""

import re
import threading
import time

import msgpack
import numpy as np

from dashboard.status import status_html
from engine.service import LiveService
from lab.soak import start_source_process
from stemwatch.config import Config
from streamer.protocol import encode_end, encode_frame, encode_start
from streamer.recording import RecordingReader, RecordingWriter, iter_frames

from test_reliability_faults import ROOT, wait_until

RATE_HZ = 100.0
N_FRAMES = 260


def _movie_1024(path):
    """8 frames of 1024x1024 uint16: the 512x512 field movie tiled 2 x 2."""
    src = [f.data for _, f in zip(range(8), iter_frames(ROOT / "replay_data" / "02_field_512.swrec"))]
    with RecordingWriter(path) as w:
        w.write(encode_start("big", (1024, 1024), "<u2", 0.1, 1e-7, 0.01), 0.0)
        for i, a in enumerate(src):
            w.write(encode_frame("big", i, float(i), np.ascontiguousarray(np.tile(a, (2, 2))), 0.1), float(i))
        w.write(encode_end("big", 8), 9.0)


def test_overload_newest_frame_bounded_latency_drops_counted(tmp_path):
    movie = tmp_path / "big.swrec"
    _movie_1024(movie)
    rec = tmp_path / "overload.swrec"
    per_frame = []
    lock = threading.Lock()

    def listener(r, status):
        with lock:
            per_frame.append((r.seq, r.t_done - r.t_acquired, r.timings_s.get("wait", np.nan),
                              r.timings_s.get("total", np.nan), len(r.chemistry.atoms), r.error))

    source, endpoint = start_source_process(movie, RATE_HZ, N_FRAMES, None, prefix="overload", one_series=True)
    svc = LiveService(Config().replace(inference={"backend": "onnx"}), endpoint, record_path=rec)
    svc.add_listener(listener)
    behind = []
    try:
        svc.start()
        t_end = time.time() + 300                                    # a hang guard
        while source.poll() is None and time.time() < t_end:
            st = svc.status()
            r = st["recorder"]
            behind.append((r["backlog"], r["backlog_bytes"], r["backlog_s"], status_html(st, {})))
            time.sleep(0.1)
        assert source.wait(300) == 0
        assert wait_until(lambda: svc.status()["frames_received"] == N_FRAMES, 120)      # hang guards only
        # the last frame is taken and analysed: every frame is then analysed or counted as dropped
        assert wait_until(lambda: (s := svc.status())["frames_analysed"] + s["dropped_for_analysis"] == N_FRAMES, 120)
        st = svc.status()
        html = status_html(st, {})
    finally:
        if source.poll() is None:
            source.kill()
        svc.stop()
    rx = st["receiver"]
    # the source really overloaded the analysis, and every skipped frame is counted and shown
    assert st["frames_analysed"] < N_FRAMES / 3
    assert st["dropped_for_analysis"] == N_FRAMES - st["frames_analysed"] > 0
    assert re.search(f"dropped for analysis</th><td[^>]*>{st['dropped_for_analysis']}</td>", html), html
    with lock:
        rows = list(per_frame)
    assert len(rows) == st["frames_analysed"] and all(r[5] is None for r in rows) and min(r[4] for r in rows) > 1000
    seq, lat, wait, total = (np.array([r[i] for r in rows], float) for i in range(4))
    assert np.all(np.diff(seq) > 0)
    # arrival time of every frame, from the recording (the receiver stamps it once, for both)
    reader = RecordingReader(rec)
    arrival = {}
    for parts, t in reader.records(verify=True):
        h = msgpack.unpackb(parts[0])
        if h["type"] == "frame":
            arrival[h["seq"]] = t
    # the newest frame: when the analysis took frame i, frame i+1 had not arrived yet
    t_start = np.array([arrival[int(q)] + w for q, w in zip(seq, wait)])
    nxt = np.array([arrival.get(int(q) + 1, np.inf) for q in seq])
    assert np.all(nxt > t_start - 0.005), (seq, nxt - t_start)
    # bounded latency from t_acquired: a frame waits at most for the analysis in progress, so its
    # latency is at most the previous frame's analysis + its own (+ transfer); with a steady
    # analysis time that is under two frame-analysis times (p99 / median reported below)
    # The bound itself is a timing figure (transfer and scheduling take longer on a busy machine):
    # measured by `stemwatch bench` and the soak, not asserted here. What holds on any machine: a
    # frame's latency includes its own analysis.
    assert np.all(lat >= total - 1e-3), (lat, total)
    t_analysis = float(np.median(total[1:]))
    # the recorder kept up, or says how far behind: every message is written, lost or queued
    rec_st = st["recorder"]
    assert rec_st["error"] is None
    in_flight = rx["messages"] - (rx["recorder"]["written"] + rec_st["lost"] + rec_st["backlog"])
    assert in_flight in (0, 1)                      # (one message may be in the writer's hands)
    seqs = [f.seq for f in iter_frames(rec, reader=reader)]
    assert len(seqs) == N_FRAMES - rec_st["lost"] and reader.complete
    # while behind, the status said by how much (frames queued, MB, seconds), also on the dashboard
    for n, nbytes, age, page in behind:
        if n:
            assert nbytes >= (n - 2) * 1024 * 1024 * 2 and age >= 0     # (counters read a moment apart)
            assert f"{n} queued, {nbytes / 2**20:.0f} MB" in page
    assert set(seqs) <= set(range(N_FRAMES)) and seqs == sorted(seqs)
    print(f"analysed {st['frames_analysed']}/{N_FRAMES}, analysis {1e3 * t_analysis:.0f} ms, latency p50/p99 "
          f"{1e3 * np.median(lat):.0f}/{1e3 * np.percentile(lat, 99):.0f} ms, wait p50 {1e3 * np.median(wait):.1f} ms, "
          f"recorder lost {rec_st['lost']}, max backlog {max(b[0] for b in behind)} frames "
          f"{max(b[2] or 0 for b in behind):.1f} s; latency p99 / median analysis = "
          f"{np.percentile(lat, 99) / t_analysis:.2f}")
