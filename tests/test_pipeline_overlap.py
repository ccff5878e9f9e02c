"""The network of frame n+1 on its own thread while frame n is finished (engine/overlap.py): the
same outputs as frame-by-frame processing, byte for byte, in order; a network failure is that
frame's error; the thread's life cycle never hangs."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.analyze import analyze_file
from engine.overlap import AheadInferencer, InferenceStage, Overlap, StageClosed, overlap_enabled
from engine.pipeline import Pipeline
from engine.service import LiveService
from engine.types import SI
from stemwatch.config import Config
from streamer.frame import Frame
from streamer.source import BaseSource, SourceExhausted, SourceReport

from _track_lattice import lattice_scene, render_frame
from _wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
PS = 0.1
OUTPUTS = ("atoms.csv", "events.jsonl", "frames.csv", "dopants.csv", "transitions.csv")


def _cfg(overlap: str) -> Config:
    """The CPU backend at its default thread count (with overlap on 2+ cores the network thread gets
    a session of its own with one thread fewer: the outputs must not change)."""
    return Config().replace(inference={"backend": "onnx"}, pipeline={"overlap": overlap})


def _analyze(tmp_path, name: str, overlap: str, limit=None) -> dict:
    from engine.infer.backends import physical_cores

    out = tmp_path / f"{Path(name).stem}-{overlap}"
    cfg = _cfg(overlap)
    if overlap == "off":         # every core, as the default gives a process of its own (a worker of
        cfg = cfg.replace(inference={"threads": physical_cores()})   # `make test` gets fewer: conftest.py)
    analyze_file(ROOT / "replay_data" / name, out, cfg, limit=limit, progress=False)
    return {f: (out / f).read_bytes() for f in OUTPUTS if (out / f).exists()}


@pytest.mark.parametrize("name,limit", [("01_switching_256.swrec", 20), ("02_field_512.swrec", 4)])
def test_analyze_outputs_are_byte_identical_with_and_without_overlap(tmp_path, name, limit):
    on, off = _analyze(tmp_path, name, "on", limit), _analyze(tmp_path, name, "off", limit)
    assert set(on) == set(off) and {"atoms.csv", "events.jsonl", "frames.csv"} <= set(on)
    for f in on:
        assert on[f] == off[f], f"{name}: {f} differs with overlap on"
    assert name.startswith("02") or on["events.jsonl"].strip(), "the recording's events were found"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_switching_256.swrec", "02_field_512.swrec", "03_lowdose_256.swrec"])
def test_analyze_outputs_are_byte_identical_with_and_without_overlap_full(tmp_path, name):
    on, off = _analyze(tmp_path, name, "on"), _analyze(tmp_path, name, "off")
    assert on == off


# ------------------------------------------------------------------------------ series and shape changes
def _movie(series: str, n: int, seed: int, size: int, si_at=(0.3, 0.3), t0: int = 0) -> list:
    """Frames of one field with one Si at the site nearest ``si_at`` (fractions of the field)."""
    pts, _ = lattice_scene(size, PS, n_si=1, seed=seed)
    sp = np.zeros(len(pts), np.int8)
    sp[np.argmin(np.linalg.norm(pts - np.asarray(si_at) * size * PS, axis=1))] = SI
    rng = np.random.default_rng(seed)
    out = []
    for t in range(t0, t0 + n):
        xy = (pts + np.array([0.1, 0.05]) * t + rng.normal(0, 0.03, pts.shape)) / PS
        out.append(Frame(data=render_frame(xy, sp, (size, size), PS, rng=rng), series=series, seq=t,
                         t_acquired=1000.0 + 0.2 * t, pixel_size_A=PS))
    return out


def _stream() -> list:
    """A series whose field moves (the Si ~9 A away: a stage move, seen after the network) just
    before the frame grows (a fov_jump seen before it); then a new series with its Si elsewhere."""
    return (_movie("a", 3, seed=1, size=160) + _movie("a", 1, seed=1, size=160, si_at=(0.7, 0.7), t0=3)
            + _movie("a", 2, seed=1, size=192, t0=4) + _movie("b", 3, seed=7, size=160, si_at=(0.7, 0.7)))


def _key(r, live: bool = False) -> tuple:
    """Everything a FrameResult decided, comparable with == (NaN fields as JSON text). ``live``:
    without the events' latency (live, it is measured to the moment the event exists)."""
    a = r.chemistry.atoms
    drop = {"latency_s"} if live else set()
    return (r.series, r.seq, r.error, r.health.verdict, json.dumps(r.health.to_dict(), sort_keys=True),
            a.xy_px.tobytes(), np.asarray(a.species).tobytes(), np.asarray(a.confidence).tobytes(),
            r.track_ids.tobytes(), r.confirmed.tobytes(), np.asarray(r.drift_px, float).tobytes(),
            tuple(json.dumps({k: v for k, v in e.to_dict().items() if k not in drop}, sort_keys=True)
                  for e in r.events))


def _overlapped(pipe, frames) -> list:
    out = []
    with Overlap(pipe, enabled=True) as ov:
        for f in frames:
            d = ov.push(f)
            if d is not None:
                out.append(d.result)
        d = ov.flush()
        if d is not None:
            out.append(d.result)
    return out


@pytest.fixture(scope="module")
def inferencer():
    from engine.infer import Inferencer

    inf = Inferencer(_cfg("off").inference)
    yield inf
    inf.close()


def test_overlap_keeps_results_and_order_across_series_and_shape_changes(inferencer):
    frames = _stream()
    seq = Pipeline(_cfg("off"), inferencer=inferencer)
    expected = [_key(seq.process(f)) for f in frames]
    got = [_key(r) for r in _overlapped(Pipeline(_cfg("on"), inferencer=inferencer), frames)]
    assert [k[:2] for k in got] == [(f.series, f.seq) for f in frames]
    assert got == expected
    verdicts = [k[3] for k in expected]
    assert verdicts == ["ok"] * 3 + ["fov_jump"] * 2 + ["ok"] * 4


def test_health_checked_ahead_across_a_new_series_would_change_the_results(inferencer, monkeypatch):
    """Why the next frame is checked ahead only within a series and frame shape: otherwise the new
    series' first frame is compared with the old series' dopants (a stage move that did not happen)."""
    frames = _stream()
    seq = Pipeline(_cfg("off"), inferencer=inferencer)
    expected = [seq.process(f).health.verdict for f in frames]
    monkeypatch.setattr(Pipeline, "may_check_ahead", lambda self, frame: True)
    unguarded = [r.health.verdict for r in _overlapped(Pipeline(_cfg("on"), inferencer=inferencer), frames)]
    assert unguarded != expected


# ------------------------------------------------------------------------------ failures
class FailsOn:
    """The real inferencer, raising on chosen frames (by their pixels), on whichever thread runs it."""

    def __init__(self, inner, bad_images):
        self.inner, self.bad = inner, [id(b) for b in bad_images]
        self.description = inner.description
        self.model_pixel_size_A = inner.model_pixel_size_A
        self.threads: set = set()

    def predict(self, image, pixel_size_A):
        self.threads.add(threading.current_thread().name)
        if id(image) in self.bad:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.predict(image, pixel_size_A)

    @property
    def last_timings_s(self):
        return self.inner.last_timings_s


def test_a_network_failure_is_that_frames_error_with_and_without_overlap(inferencer):
    frames = _movie("f", 6, seed=2, size=160)
    bad = [frames[2].data, frames[5].data]
    one = Pipeline(_cfg("off"), inferencer=FailsOn(inferencer, bad))
    seq = [_key(one.process(f)) for f in frames]
    failing = FailsOn(inferencer, bad)
    got = [_key(r) for r in _overlapped(Pipeline(_cfg("on"), inferencer=failing), frames)]
    assert got == seq
    assert [k[2] is not None for k in got] == [False, False, True, False, False, True]
    assert "illegal memory access" in got[2][2] and got[2][2].startswith("RuntimeError")
    assert failing.threads == {"stemwatch-network"}           # the network ran on the stage's thread


class Blocking:
    """An inferencer whose predict waits for ``release`` (a hung backend) and records its calls."""

    model_pixel_size_A = 0.2
    description = "blocking fake"

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls = []

    def predict(self, image, pixel_size_A):
        self.calls.append(float(pixel_size_A))
        self.started.set()
        self.release.wait(30)
        if not isinstance(image, np.ndarray):
            raise TypeError("not an image")
        return ("probs", float(pixel_size_A))


def test_stage_close_abandons_a_hung_network_and_cancels_the_waiting_frame():
    inf = Blocking()
    stage = InferenceStage(inf).start()
    running = stage.submit(np.zeros((4, 4)), 0.1)
    assert inf.started.wait(10)
    waiting = stage.submit(np.zeros((4, 4)), 0.2)
    assert stage.close(timeout_s=0.2) is False                 # returns: the thread is abandoned, not joined
    with pytest.raises(StageClosed):
        stage.result(waiting)                                 # cancelled, never run
    with pytest.raises(StageClosed):
        stage.submit(np.zeros((4, 4)), 0.3)
    inf.release.set()
    assert stage.result(running) == (("probs", 0.1), {})       # the running one still completes
    assert inf.calls == [0.1]


def test_stage_reports_the_networks_exception_and_keeps_running():
    inf = Blocking()
    inf.release.set()
    stage = InferenceStage(inf).start()
    ahead = AheadInferencer(stage)
    with pytest.raises(TypeError, match="not an image"):
        ahead.predict("nonsense", 0.1)
    img = np.ones((4, 4))
    ahead.start(img, 0.1)
    assert ahead.predict(img, 0.1) == ("probs", 0.1)           # the one started ahead, not a second call
    assert inf.calls == [0.1, 0.1]
    assert stage.close(timeout_s=5) is True and not stage.alive


def test_overlap_setting():
    assert overlap_enabled("on") and not overlap_enabled("off")
    assert isinstance(overlap_enabled("auto"), bool)
    with pytest.raises(ValueError):
        overlap_enabled("sometimes")


# ------------------------------------------------------------------------------ live
class ListSource(BaseSource):
    """Frames from a list; a None entry is a poll that finds no frame yet."""

    description = "list"

    def __init__(self, frames):
        self.items, self.n = list(frames), 0

    def read(self, timeout_s=None):
        if not self.items:
            raise SourceExhausted(self.description)
        f = self.items.pop(0)
        self.n += f is not None
        return f

    def report(self):
        return SourceReport(source=self.description, frames=self.n)


def test_live_service_with_overlap_gives_the_offline_results_in_order(inferencer):
    """Frames always ready (the live loop holds one back and runs its network while finishing the
    one before), now and then none (it finishes the held frame at once): every frame, in order, as
    frame-by-frame analysis -- across a stage move, a frame-size change and a new series."""
    frames = _stream()
    seq = Pipeline(_cfg("off"), inferencer=inferencer)
    expected = [_key(seq.process(f), live=True) for f in frames]
    polls = frames[:2] + [None] + frames[2:6] + [None, None] + frames[6:]
    got = []
    live = Pipeline(_cfg("on"), inferencer=FailsOn(inferencer, []))       # stop() must not close the shared one
    svc = LiveService(_cfg("on"), pipeline=live, source=ListSource(polls))
    svc.add_listener(lambda r, s: got.append(_key(r, live=True)))
    svc.start()
    try:
        assert wait_until(lambda: len(got) == len(expected), timeout=300)
    finally:
        svc.stop()
    assert got == expected
    st = svc.status()
    assert st["frames_analysed"] == len(expected) and st["errors"] == 0
    lat = st["latency_s"]
    assert lat["started"]["p50"] <= lat["tracking"]["p50"] <= lat["published"]["p50"]


def test_overlap_option_sets_the_configuration(tmp_path, capsys):
    from engine.cli import config_from_args
    from stemwatch.cli import build_parser

    parser = build_parser()
    assert config_from_args(parser.parse_args(["analyze", "x", "--out", "y"])).pipeline.overlap == "auto"
    f = tmp_path / "o.json"
    f.write_text('{"pipeline": {"overlap": "off"}}')
    assert config_from_args(parser.parse_args(["analyze", "x", "--out", "y", "--config", str(f)])).pipeline.overlap == "off"
    args = parser.parse_args(["serve", "--connect", "tcp://127.0.0.1:1", "--config", str(f), "--overlap", "on"])
    assert config_from_args(args).pipeline.overlap == "on"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["analyze", "x", "--out", "y", "--overlap", "sometimes"])
    assert exc.value.code == 2 and "--overlap" in capsys.readouterr().err


def test_live_stop_returns_when_the_network_thread_hangs():
    """A backend call that never returns on the network thread: stop() returns within its timeouts
    and does not close the inferencer under the running call."""
    inf = Blocking()
    closed = []
    inf.close = lambda: closed.append(True)
    frames = _movie("h", 3, seed=3, size=160)
    svc = LiveService(_cfg("on"), pipeline=Pipeline(_cfg("on"), inferencer=inf), source=ListSource(frames)).start()
    try:
        assert inf.started.wait(60)
        stopper = threading.Thread(target=svc.stop, kwargs={"timeout_s": 0.5}, daemon=True)
        stopper.start()
        stopper.join(60)                                   # hang guard only
        assert not stopper.is_alive(), "LiveService.stop hung on a hung network thread"
        assert closed == []
    finally:
        inf.release.set()


def test_network_thread_gets_one_core_fewer_unless_threads_are_configured(inferencer):
    from engine.infer.backends import physical_cores
    from engine.overlap import network_for_overlap

    own = network_for_overlap(Pipeline(_cfg("on"), inferencer=inferencer))
    try:
        if physical_cores() < 2:
            assert own is None
        else:
            assert own.small.backend.threads == physical_cores() - 1
            assert own.small.backend.model_path == inferencer.backend.model_path
            assert own.large is inferencer           # large grids: the pipeline's session, every core
    finally:
        if own is not None:
            own.close()
    fixed = Config().replace(inference={"backend": "onnx", "threads": 2})
    assert network_for_overlap(Pipeline(fixed, inferencer=inferencer)) is None
    assert network_for_overlap(Pipeline(_cfg("on"), inferencer=FailsOn(inferencer, []))) is None


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_int8_network_keeps_one_thread_up_to_a_larger_grid(precision):
    """The INT8 network runs a 256^2 grid no faster on two threads than on one: a 512^2 frame at 0.1 A/px
    stays on the network thread's own session with INT8 (47.7 -> 53.4 frames/s measured), on every core
    with FP32; a 768^2 frame (a 384^2 grid) goes to every core with both."""
    from engine.infer import Inferencer
    from engine.infer.backends import physical_cores
    from engine.overlap import ALL_CORES_FROM_GRID_PX, ALL_CORES_FROM_GRID_PX_INT8, network_for_overlap

    if physical_cores() < 2:
        pytest.skip("one core: no separate network session")
    cfg = Config().replace(inference={"backend": "onnx", "cpu_precision": precision}, pipeline={"overlap": "on"})
    with Inferencer(cfg.inference) as inf:
        if inf.precision != precision:
            pytest.skip(f"no {precision} model here ({inf.selection_reason})")
        own = network_for_overlap(Pipeline(cfg, inferencer=inf))
        try:
            assert own.from_grid_px == (ALL_CORES_FROM_GRID_PX_INT8 if precision == "int8" else ALL_CORES_FROM_GRID_PX)
            assert (own.choose((512, 512), 0.1) is own.small) == (precision == "int8")
            assert own.choose((768, 768), 0.1) is inf
        finally:
            own.close()


class Named:
    """A fake network that answers with its name (and the call's model sampling)."""

    model_pixel_size_A = 0.2

    def __init__(self, name):
        self.name, self.closed = name, False
        self.last_timings_s = {"network": 0.0}

    def predict(self, image, pixel_size_A, model_pixel_size_A=None):
        return self.name, model_pixel_size_A

    def close(self):
        self.closed = True


def test_large_model_grids_run_on_every_core_small_ones_on_one_core_fewer():
    """The network thread's router (issue 20): a 1024^2 or 512^2 frame at 0.1 A/px (a 512^2 or 256^2
    model grid) runs on the pipeline's session (every core: 9.2 -> 12.0 and 39.0 -> 41.9 frames/s
    measured), a 256^2 frame on the thread's own; a coarser model grid (a frame over the cap) counts
    at its own size; closing the router closes only its own session."""
    from engine.overlap import ALL_CORES_FROM_GRID_PX, GridRouted

    small, large = Named("small"), Named("large")
    r = GridRouted(small, large, 0.2)
    assert r.predict(np.zeros((1024, 1024)), 0.1) == ("large", None)
    assert r.predict(np.zeros((512, 512)), 0.1) == ("large", None)
    assert r.predict(np.zeros((256, 256)), 0.1) == ("small", None)
    assert r.predict(np.zeros((256, 256)), 0.2) == ("large", None)            # 0.2 A/px: a 256^2 grid
    assert r.predict(np.zeros((2048, 2048)), 0.1, model_pixel_size_A=1.6) == ("small", 1.6)   # a 128^2 grid
    assert r.predict(np.zeros((2048, 2048)), 0.1, model_pixel_size_A=0.8) == ("large", 0.8)   # a 256^2 grid
    assert r.last_timings_s == {"network": 0.0}
    side = int(np.ceil(np.sqrt(ALL_CORES_FROM_GRID_PX)))
    assert r.choose((2 * side, 2 * side), 0.1) is large and r.choose((2 * side - 4, 2 * side - 4), 0.1) is small
    r.close()
    assert small.closed and not large.closed


class Coarse:
    """Records the model sampling asked for (a too_large frame asks for a coarser grid)."""

    model_pixel_size_A = 0.2
    description = "coarse fake"

    def __init__(self):
        self.calls = []

    def predict(self, image, pixel_size_A, model_pixel_size_A=None):
        self.calls.append((float(pixel_size_A), model_pixel_size_A))
        return ("probs", model_pixel_size_A)


def test_a_frame_over_the_grid_cap_reaches_the_network_thread_with_its_coarser_grid():
    """Merging overlap (issue 20) with coarser grids (issue 13): the network thread must pass the
    coarser model sampling on, not run the frame on the full grid (or fail on the keyword)."""
    inf = Coarse()
    stage = InferenceStage(inf).start()
    ahead = AheadInferencer(stage)
    img = np.ones((4, 4))
    ahead.start(img, 0.1)                                        # started ahead on the model's own grid
    assert ahead.predict(img, 0.1, model_pixel_size_A=0.21) == ("probs", 0.21)
    assert ahead.predict(img, 0.1) == ("probs", None)           # the one started ahead
    assert inf.calls == [(0.1, None), (0.1, 0.21)]
    assert stage.close(timeout_s=5) is True
