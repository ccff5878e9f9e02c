"""One frame-source protocol (streamer/source.py) for files, sockets and the simulator: open, read
frames with their metadata, report completeness and losses, close."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from stemwatch.cli import main
from stemwatch.config import Config
from streamer.frame import Frame
from streamer.recording import iter_frames
from streamer.source import SOURCES, BaseSource, FileSource, SourceExhausted, SourceReport, open_source

REC = Path(__file__).resolve().parent.parent / "replay_data" / "01_switching_256.swrec"


def test_file_source_reads_a_recording_completely():
    with open_source(REC) as src:
        frames = list(src.frames())
        rep = src.report()
    ref = list(iter_frames(REC))
    assert [f.seq for f in frames] == [f.seq for f in ref] == list(range(48))
    assert all(np.array_equal(a.data, b.data) and a.meta == b.meta for a, b in zip(frames, ref))
    assert rep.complete and rep.problem is None and rep.frames == 48 and rep.series == [ref[0].series]
    with pytest.raises(SourceExhausted):
        src.read()


def test_a_torn_recording_is_reported_and_analyze_says_so(tmp_path, capsys):
    torn = tmp_path / "torn.swrec"
    data = REC.read_bytes()
    torn.write_bytes(data[: int(len(data) * 0.2)])
    with FileSource(torn) as src:
        n = sum(1 for _ in src.frames())
        rep = src.report()
    assert 0 < n < 48 and not rep.complete and "truncated" in rep.problem
    out = tmp_path / "out"
    assert main(["analyze", str(torn), "--out", str(out), "--backend", "onnx", "--quiet", "--limit", "3"]) == 0
    assert json.loads((out / "summary.json").read_text())["input_complete"] is True      # stopped on purpose
    assert main(["analyze", str(torn), "--out", str(out), "--backend", "onnx", "--quiet"]) == 3   # damaged input (issue 14)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_complete"] is False and "truncated" in summary["source"]["problem"]
    assert "incomplete" in capsys.readouterr().err


def test_seq_gaps_are_counted_per_series():
    from streamer.source import SeqCheck

    check = SeqCheck()
    for series, q in [("a", 0), ("a", 1), ("a", 4), ("b", 0), ("a", 5), ("a", 9), ("b", 1)]:
        check.add(Frame(np.zeros((4, 4), np.float32), series, q, float(q), 0.1))
    assert check.gaps == [[2, 3], [6, 8]] and check.missing == 5 and check.frames == 7
    assert check.series == ["a", "b"]


def test_simulator_source_by_name():
    with open_source("sim:switching", n_frames=3, t0=100.0) as src:
        frames = list(src.frames())
        rep = src.report()
    assert [f.seq for f in frames] == [0, 1, 2] and frames[0].shape == (256, 256)
    assert frames[1].t_acquired == pytest.approx(100.0 + src.spec.frame_time_s)
    assert frames[0].pixel_size_A == pytest.approx(0.1) and frames[0].meta["scenario"] == "switching"
    assert rep.complete and rep.frames == 3


class ListSource(BaseSource):
    """A source added without touching any other module: registered under a scheme."""

    description = "list"

    def __init__(self, spec: str, n: int = 2):
        self.spec, self.n, self.i = spec, n, 0

    def read(self, timeout_s=None):
        if self.i >= self.n:
            raise SourceExhausted(self.description)
        self.i += 1
        return Frame(np.full((8, 8), self.i, np.float32), self.spec, self.i - 1, float(self.i), 0.1)

    def report(self):
        return SourceReport(source=self.description, frames=self.i)


def test_a_new_source_is_one_registered_class(monkeypatch):
    monkeypatch.setitem(SOURCES, "lst", f"{__name__}:ListSource")
    with open_source("lst:abc", n=3) as src:
        assert [(f.series, f.seq) for f in src.frames()] == [("abc", 0), ("abc", 1), ("abc", 2)]
    with pytest.raises(KeyError, match="no frame source"):
        open_source("nosuch:thing")


def test_live_service_runs_on_any_source():
    """serve's service on the simulator directly (no socket): every frame analysed, then it stops."""
    from engine.service import LiveService
    from engine.sim.source import SimulatorSource

    svc = LiveService(Config().replace(inference={"backend": "onnx"}), source=SimulatorSource("switching", n_frames=4))
    results = []
    svc.add_listener(lambda r, st: results.append(r.seq))
    with svc:
        t0 = time.time()
        while len(results) < 4 and time.time() - t0 < 60:
            time.sleep(0.05)
        st = svc.status()
    assert results == [0, 1, 2, 3]
    assert st["frames_analysed"] == 4 and st["receiver"]["source"]["complete"]
