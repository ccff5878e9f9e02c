"""``stemwatch analyze``: output files and their columns, from an .npy stack and from a recording."""

import csv
import json

import numpy as np
import pytest

from stemwatch.cli import main
from streamer import protocol
from streamer.recording import RecordingWriter

from _track_lattice import lattice_scene, render_frame

PS = 0.1
SIZE = 128


def _stack(n=6, seed=0):
    pts, sp = lattice_scene(SIZE, PS, n_si=1, seed=seed)
    rng = np.random.default_rng(seed)
    return np.stack([render_frame((pts + [0.1 * t, 0.05 * t]) / PS, sp, (SIZE, SIZE), PS, rng=rng)
                     for t in range(n)])


def _check_outputs(out, n_frames):
    with open(out / "atoms.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", "atom_id", "x", "y", "species", "coordination", "confidence", "edge"]
    body = rows[1:]
    assert body
    frames = {int(r[0]) for r in body}
    assert frames == set(range(n_frames))
    assert {r[4] for r in body} <= {"C", "Si", "other"}
    x = np.array([float(r[2]) for r in body])
    y = np.array([float(r[3]) for r in body])
    assert x.min() >= -1 and x.max() <= SIZE and y.min() >= -1 and y.max() <= SIZE
    assert all(int(r[1]) >= 0 and int(r[5]) >= 0 and 0 <= float(r[6]) <= 1 for r in body)
    # atom ids are unique within a frame
    for f in frames:
        ids = [r[1] for r in body if int(r[0]) == f]
        assert len(ids) == len(set(ids))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for e in events:
        assert {"frame", "kind", "atom_id", "x", "y", "t_acquired", "latency_s", "before", "after"} <= set(e)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == n_frames and summary["frames_with_error"] == 0
    assert summary["atom_rows"] == len(body) and summary["events"] == len(events)
    assert "ONNX Runtime" in summary["backend"]
    with open(out / "frames.csv") as fh:
        fr = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in fr] == list(range(n_frames))
    return body, summary


def test_analyze_npy_stack(tmp_path, capsys):
    path = tmp_path / "movie.npy"
    np.save(path, _stack())
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out), "--pixel-size", str(PS), "--backend", "onnx",
                 "--quiet"]) == 0
    body, summary = _check_outputs(out, 6)
    assert "6 frames" in capsys.readouterr().out
    # the field drifts 0.1 A, 0.05 A per frame
    assert summary["drift_A_per_frame"]["mean"] == pytest.approx(np.hypot(0.1, 0.05), abs=0.05)


def test_analyze_recording_with_limit(tmp_path):
    stack = _stack(5, seed=1)
    rec = tmp_path / "movie.swrec"
    with RecordingWriter(rec) as w:
        w.write(protocol.encode_start("rec-series", (SIZE, SIZE), np.float32, PS, 1e-6, 0.2), 1.0)
        for i, img in enumerate(stack):
            w.write(protocol.encode_frame("rec-series", i, 100.0 + 0.2 * i, img, PS), 1.0 + i)
    out = tmp_path / "out"
    assert main(["analyze", str(rec), "--out", str(out), "--backend", "onnx", "--quiet", "--limit", "4"]) == 0
    _, summary = _check_outputs(out, 4)
    assert summary["series"] == ["rec-series"]


def test_analyze_bad_input_fails_clearly(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "o"), "--pixel-size", "0.1"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o"), "--pixel-size", "0.1"]) == 2
    assert "bad.npy" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
