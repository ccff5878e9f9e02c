"""The Pipeline on rendered lattice frames with the shipped model (ONNX Runtime, CPU)."""

import numpy as np
import pytest

from engine.pipeline import STAGES, Pipeline
from engine.types import FrameResult
from stemwatch.config import Config, EventConfig
from streamer.frame import Frame

from _track_lattice import lattice_scene, render_frame

PS = 0.1


@pytest.fixture(scope="module")
def pipe():
    p = Pipeline(Config().replace(inference={"backend": "onnx"}))
    yield p
    p.close()


def frames(n, series="s1", drift_A=(0.2, 0.1), n_si=2, seed=0, size=192):
    pts, sp = lattice_scene(size, PS, n_si=n_si, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        xy = (pts + np.asarray(drift_A) * t + rng.normal(0, 0.03, pts.shape)) / PS
        out.append(Frame(data=render_frame(xy, sp, (size, size), PS, rng=rng), series=series, seq=t,
                         t_acquired=1000.0 + 0.2 * t, pixel_size_A=PS))
    return out


def test_process_returns_a_consistent_frame_result(pipe):
    pipe.reset()
    fs = frames(4)
    results = [pipe.process(f) for f in fs]
    for f, r in zip(fs, results):
        assert isinstance(r, FrameResult) and r.error is None
        n = len(r.chemistry.atoms)
        assert n > 100
        assert r.track_ids.shape == (n,) and r.track_ids.dtype == np.int64 and (r.track_ids >= 0).all()
        assert r.confirmed.shape == (n,)
        assert (r.series, r.seq, r.t_acquired, r.frame_shape) == (f.series, f.seq, f.t_acquired, f.data.shape)
        assert set(STAGES) <= set(r.timings_s) and all(v >= 0 for v in r.timings_s.values())
        assert r.t_done >= r.t_acquired
    # the same atoms keep their ids from frame to frame
    a, b = results[2], results[3]
    common = np.intersect1d(a.track_ids, b.track_ids)
    assert len(common) > 0.9 * min(len(a.track_ids), len(b.track_ids))
    # drift is reported in input pixels per frame: 0.2 A, 0.1 A at 0.1 A/px
    assert results[3].drift_px == pytest.approx((2.0, 1.0), abs=0.4)


class FailsOnce:
    """Fault injection: the real inferencer, raising on one chosen frame (a backend failure)."""

    def __init__(self, inner, bad_calls):
        self.inner, self.bad, self.calls = inner, set(bad_calls), 0
        self.description = inner.description

    def predict(self, image, pixel_size_A):
        self.calls += 1
        if self.calls in self.bad:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.predict(image, pixel_size_A)

    @property
    def last_timings_s(self):
        return self.inner.last_timings_s


def test_backend_failure_on_one_frame_is_reported_and_skipped(pipe):
    p = Pipeline(pipe.cfg, inferencer=FailsOnce(pipe.inferencer, {3}), motifs=pipe.motifs)
    results = [p.process(f) for f in frames(6, series="fault")]
    bad = results[2]
    assert bad.error and "illegal memory access" in bad.error
    assert len(bad.chemistry.atoms) == 0 and len(bad.track_ids) == 0 and bad.events == []
    assert p.errors == 1 and "RuntimeError" in p.last_error
    ok = [r for r in results if r.error is None]
    assert len(ok) == 5
    # tracking continues across the skipped frame: the atoms of frame 1 keep their ids in frame 3
    common = np.intersect1d(results[1].track_ids, results[3].track_ids)
    assert len(common) > 0.9 * len(results[3].track_ids)


def test_a_new_series_resets_tracks(pipe):
    pipe.reset()
    r1 = [pipe.process(f) for f in frames(2, series="A")][-1]
    r2 = pipe.process(frames(1, series="B")[0])
    assert pipe.series == "B"
    assert np.intersect1d(r1.track_ids, r2.track_ids).size == 0


def test_event_thresholds_change_between_frames(pipe):
    pipe.set_events(EventConfig(k_of_n=(3, 5), min_confidence=0.3))
    assert pipe.tracker.ecfg.k_of_n == (3, 5) and pipe.cfg.events.min_confidence == 0.3
    with pytest.raises(ValueError):
        pipe.set_events(EventConfig(k_of_n=(4, 3)))
    pipe.set_events(EventConfig())


def test_keep_image_attaches_the_pixels(pipe):
    p = Pipeline(pipe.cfg, inferencer=pipe.inferencer, motifs=pipe.motifs, keep_image=True)
    f = frames(1)[0]
    r = p.process(f)
    assert r.image is f.data
