"""``stemwatch bench pipeline``'s cost per pixel (issue 20): 2048x2048 against 512x512."""

from __future__ import annotations

import pytest

from lab.bench_pipeline import _per_pixel


def _rows(fps_2048: float) -> list:
    return [{"size": "512x512", "fps": 50.0, "atoms": 1000, "atoms_graph_ms": 6.0, "tracking_ms": 2.0},
            {"size": "2048x2048", "fps": fps_2048, "atoms": 16000, "atoms_graph_ms": 96.0, "tracking_ms": 40.0}]


def test_cost_per_pixel_relative_to_512_and_per_atom_stage_costs():
    rows, targets = _rows(50.0 / 16 / 1.2), {}
    _per_pixel(rows, targets)
    assert rows[0]["ms_per_Mpx"] == pytest.approx(20.0 / 0.262144)
    assert rows[1]["per_px_vs_512"] == pytest.approx(1.2)
    assert rows[0]["atoms_graph_us_per_atom"] == pytest.approx(6.0) == rows[1]["atoms_graph_us_per_atom"]
    assert rows[1]["tracking_us_per_atom"] == pytest.approx(2.5)
    assert targets["2048x2048 time per pixel / 512x512's"].endswith("PASS")
    rows, targets = _rows(50.0 / 16 / 1.4), {}
    _per_pixel(rows, targets)
    assert targets["2048x2048 time per pixel / 512x512's"] == "1.40 <= 1.3: FAIL"


def test_frame_rate_targets_read_the_default_configurations_columns():
    """The end-to-end target reads the overlap columns when overlap is on (the default on >= 2 CPUs),
    the plain sequential ones when it is off; the issue-20 targets are printed beside it."""
    from lab.bench_pipeline import _targets
    from stemwatch.config import Config

    row = {"size": "512x512", "precision": "int8", "fps": 17.0, "live_fps": 19.0, "latency_p99_ms": 200.0,
           "seq_fps": 18.0, "ov_fps": 31.0, "seq_live_fps": 17.0, "ov_live_fps": 26.0, "seq_p99_ms": 130.0,
           "ov_p99_ms": 120.0}
    on, off = {}, {}
    _targets([row], on, Config().replace(pipeline={"overlap": "on"}))
    _targets([row], off, Config().replace(pipeline={"overlap": "off"}))
    assert on["512x512 end-to-end frames/s (overlap on)"] == "26.0 >= 20: PASS"
    assert off["512x512 end-to-end frames/s (overlap off)"] == "17.0 >= 20: FAIL"
    assert on["512x512 offline frames/s (overlap on)"] == "31.0 >= 50: FAIL"
    assert on["512x512 live frames/s, p99 latency (overlap on)"] == "26.0 >= 40 and 120 ms <= 80 ms: FAIL"


def test_live_target_reads_the_run_fed_at_42_hz_when_there_is_one():
    """Issue 20's live target is about a 40 Hz stream: with an ``at_rate_*`` run (fed at 42 Hz, the default
    configuration) the target reads it, not the overloaded capacity run."""
    from lab.bench_pipeline import _targets
    from stemwatch.config import Config

    row = {"size": "512x512", "precision": "int8", "fps": 30.0, "ov_fps": 53.0, "ov_live_fps": 41.0,
           "ov_p99_ms": 89.0, "at_rate_hz": 42.0, "at_rate_fps": 41.0, "at_rate_p99_ms": 60.0}
    t = {}
    _targets([row], t, Config().replace(pipeline={"overlap": "on"}))
    assert t["512x512 live frames/s, p99 latency (fed at 42 Hz, default configuration)"] == \
        "41.0 >= 40 and 60 ms <= 80 ms: PASS"
    row["at_rate_p99_ms"] = 85.0
    _targets([row], t, Config().replace(pipeline={"overlap": "on"}))
    assert t["512x512 live frames/s, p99 latency (fed at 42 Hz, default configuration)"].endswith("FAIL")
