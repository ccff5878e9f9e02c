"""End to end on a simulated movie with exact truth: simulator -> recording -> ``stemwatch analyze``
(shipped model, ONNX Runtime) -> ``stemwatch evaluate``. Issue 6 criterion 6 on a small movie."""

import json

import pytest

from stemwatch.cli import main


@pytest.mark.parametrize("scenario,seed", [("switching", 77)])
def test_simulated_movie_end_to_end(tmp_path, scenario, seed):
    rec = tmp_path / "movie.swrec"
    assert main(["simulate", "--out", str(rec), "--scenario", scenario, "--seed", str(seed), "-q"]) == 0
    out = tmp_path / "out"
    assert main(["analyze", str(rec), "--out", str(out), "--backend", "onnx", "--quiet"]) == 0
    assert main(["evaluate", str(out), str(rec), "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    t, ev = r["tracking"], r["events"]
    assert r["detection"]["f1"] > 0.99
    assert t["idf1"] >= 0.99
    assert t["id_switches_per_10k_atom_frames"] <= 2.0       # <= 1 switch in this ~12k atom-frame movie
    assert ev["truth_events"] >= 4 and ev["recall"] >= 0.95 and ev["latency_frames_max"] <= 3
    assert ev["flicker_alarms"] == 0
    assert ev["false_events"] == 0
