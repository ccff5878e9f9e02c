"""Soak (issue 8, criterion 1): the simulated microscope (lab.soak's source process, looping
replay_data/02_field_512.swrec, 512x512 with ground truth) streams into the live service with
recording on (rotated segments, each read back with checksums), the dashboard and a headless
Chromium showing it. A ~20 s run by default; 10 minutes at 28 frames/s with ``-m slow``; the
30-minute, 50,000-frame run is ``stemwatch bench soak``.
"""

import pytest

from _browser import browser_paths
from lab.soak import run_soak
from lab.soak_memory import memory_trend

#: a short run reaches the dashboard's steady state (ring buffers full) within its warm-up
SMALL_DASHBOARD = {"history_frames": 10, "max_event_frames": 4, "max_events": 50}


def _check(r, min_series: int, strict_events: bool = False):
    print({k: r[k] for k in ("duration_s", "frames_sent", "frames_recorded", "recorder_lost", "frames_analysed",
                             "dropped_for_analysis", "latency_p50_s", "latency_p99_s", "events",
                             "events_first_half", "events_second_half")}, r["rss"])
    # nothing lost: every frame sent was received and recorded exactly once (per series seq 0..n-1)
    assert r["frames_sent"] >= 20 * min_series
    assert r["frames_received"] == r["frames_sent"]
    assert r["frames_recorded"] == r["frames_sent"] and r["recorder_lost"] == 0 and r["recorder_error"] is None
    assert r["series_not_exact_count"] == 0 and r["recording_problems"] == []
    assert r["recording_segments"] >= 1       # (rotations within the run: fewer on a busy machine)
    # every frame either analysed or counted as dropped for analysis
    assert r["frames_analysed"] + r["dropped_for_analysis"] == r["frames_received"]
    assert r["frames_analysed"] >= min_series          # how many more depends on the machine's load
    assert r["analysis_errors"] == 0 and r["gaps"] == 0 and r["malformed"] == 0 and r["stalls"] == 0
    # flat memory, no leaked descriptors or threads
    rss = r["rss"]
    # (samples: how many the sampler thread got on a busy machine; at least a few after warm-up)
    assert rss["post_warmup_samples"] >= 3 and rss["growth_pct"] < 5.0, rss
    assert r["fds_start_end"][1] <= r["fds_start_end"][0] + 2 and r["threads_start_end"][1] <= r["threads_start_end"][0] + 1
    # the browser kept showing new frames (until it was killed, if it was)
    assert r["browser"]["distinct_frames_seen"] >= 2     # how many: what analysis kept up with
    assert r["listener_errors"] == 0
    # events against the movie's truth (drop-aware scoring, lab.soak.score_series)
    ev = r["events"]
    assert ev["series_scored"] >= min_series - 1 and ev["flicker_alarms"] == 0, ev
    # how many truth events fall on analysed frames depends on how many frames the machine's load
    # let analysis take (drop-aware scoring): scored when there are enough of them
    # recall needs the analysed frames a load-free machine gives (the 10-minute run checks it);
    # precision does not depend on how many frames were dropped
    if ev["truth_events"] >= 5:
        assert ev["precision"] >= 0.9, ev
        if strict_events:
            assert ev["recall"] >= 0.7, ev


@pytest.mark.browser
def test_short_soak_flat_memory_nothing_lost_browser_killed_midway(tmp_path):
    """10.5 s at 8 frames/s (4 series of 20 frames and a part; longer on a busy machine, see
    run_soak's max_duration_s and min_frames: with both cores loaded by other jobs the source process
    once sent only 79 frames in 12 s). Two thirds in, the browser is killed
    (SIGKILL) while frames are being pushed to it: a browser disconnecting mid-update (criterion 3)
    changes nothing upstream (tests/test_reliability_faults.py has it alone, under -m slow)."""
    browser_paths()                        # skip (fail under CI=true) without chromium
    r = run_soak(duration_s=10.5, rate_hz=8, warmup_s=4, sample_period_s=0.3, segment_s=3.5, workdir=tmp_path,
                 dashboard=SMALL_DASHBOARD, progress=False, kill_browser_at_s=7,
                 warmup_frames=3 * SMALL_DASHBOARD["history_frames"], max_duration_s=240, min_frames=84)
    _check(r, min_series=4)
    b = r["browser"]
    assert b["killed_at_s"] is not None and b["killed_processes"] >= 1
    # analysis went on after the browser died (how many: load; on a busy machine the run goes on past
    # 10.5 s until the page has shown 2 frames, the browser was killed and a frame analysed after it)
    assert b["analysed_after_kill"] >= 1, b


@pytest.mark.slow
@pytest.mark.browser
def test_soak_10_minutes(tmp_path):
    browser_paths()
    """10 minutes at 10 frames/s (about half the frames analysed on 2 loaded cores, as in the short
    run); the 30-minute, 50,000-frame run at 27.8 frames/s is ``stemwatch bench soak``."""
    r = run_soak(duration_s=600, rate_hz=10, warmup_s=120, sample_period_s=2, segment_s=60, workdir=tmp_path,
                 progress=True)
    _check(r, min_series=250, strict_events=True)
    assert r["duration_s"] >= 600
    # no degradation over time: the events of the second half as good as those of the first
    assert r["events_second_half"]["recall"] >= r["events_first_half"]["recall"] - 0.1


def test_memory_trend_detects_growth():
    """The trend measure used above: flat after warm-up -> ~0 %; a steady leak -> its size."""
    import numpy as np

    t = np.arange(0, 60, 0.5)
    warm = np.where(t < 10, 200 + 5 * t, 250.0) * 2**20
    flat = memory_trend(t, warm + np.random.default_rng(0).normal(0, 2**19, len(t)), warmup_s=10)
    assert abs(flat["growth_pct"]) < 1 and flat["max_MB"] > 249
    leak = memory_trend(t, warm + (t - 10).clip(0) * 2**20, warmup_s=10)      # 1 MB/s
    assert 12 < leak["growth_pct"] < 25 and 3000 < leak["slope_MB_per_h"] < 4000


def test_long_series_movie_is_simulated_once_with_truth(tmp_path):
    """The bench's default movie: random events spaced over long series, exact truth, cached."""
    from lab.soak import LONG_MOVIE, MovieTruth, long_series_movie, resolve_movie

    path = long_series_movie(tmp_path, frames=24, event_rate_per_frame=0.2, seed=7)
    truth = MovieTruth.load(path)
    assert truth.n_frames == 24 and truth.pixel_size_A == 0.1
    assert len(truth.events) >= 1 and all(0 < int(e["frame"]) < 24 for e in truth.events)
    mtime = path.stat().st_mtime_ns
    assert long_series_movie(tmp_path, frames=24, event_rate_per_frame=0.2, seed=7) == path
    assert path.stat().st_mtime_ns == mtime                      # cached, not simulated again
    assert resolve_movie("replay_data/02_field_512.swrec", tmp_path).name == "02_field_512.swrec"
    assert LONG_MOVIE == "long"
