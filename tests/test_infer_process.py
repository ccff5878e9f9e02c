"""The network in a process of its own (engine/infer/process.py): the same probabilities as the
thread's session, byte for byte; a frame's error reads as without it; a child that dies or cannot
start hands the frames to the fallback without losing one; nothing is left behind after close."""

import glob
import os
import time

import numpy as np
import pytest

from engine.infer import Inferencer
from engine.infer.process import ProcessInferencer
from engine.pipeline import Pipeline
from stemwatch.config import Config
from streamer.frame import Frame

from _track_lattice import lattice_scene, render_frame

PS = 0.1
CFG = Config().replace(inference={"backend": "onnx", "threads": 1})

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the network process needs POSIX")


def _frames(n: int = 4, shape=(256, 256)) -> list[np.ndarray]:
    """``n`` frames of one drifting field with a Si (float32)."""
    pts, sp = lattice_scene(shape[0], PS, n_si=1, seed=5)
    rng = np.random.default_rng(5)
    return [render_frame((pts + np.array([0.1, 0.05]) * t) / PS, sp, shape, PS, rng=rng).astype(np.float32)
            for t in range(n)]


def _wait_ready(inf: ProcessInferencer, image, timeout_s: float = 60.0) -> None:
    """Frames go to the fallback until the child has loaded the model: ask until it serves them."""
    t_end = time.monotonic() + timeout_s
    while inf.frames_in_process == 0:
        inf.predict(image, PS)
        assert time.monotonic() < t_end, "the network process did not start"
        time.sleep(0.05)


def _ours() -> set:
    return set(glob.glob("/dev/shm/stemwatch-net-*"))


@pytest.fixture()
def proc():
    inf = ProcessInferencer(CFG.inference, fallback=Inferencer(CFG.inference))
    yield inf
    inf.close()


def test_same_probabilities_as_the_thread_session_byte_for_byte(proc):
    frames = _frames()
    before = _ours()
    _wait_ready(proc, frames[0])
    n0 = proc.frames_in_process
    with Inferencer(CFG.inference) as ref:
        for img in frames + [frames[0].astype(np.uint16), frames[1][:200, :176]]:   # another dtype, shape
            a, b = proc.predict(img, PS), ref.predict(img, PS)
            assert a.p.dtype == b.p.dtype and a.p.shape == b.p.shape
            assert a.p.tobytes() == b.p.tobytes()
            assert (a.pixel_size_A, a.frame_shape, a.frame_pixel_size_A) == \
                   (b.pixel_size_A, b.frame_shape, b.frame_pixel_size_A)
    assert proc.frames_in_process - n0 == len(frames) + 2, "every frame ran in the child"
    assert set(proc.last_timings_s) == {"preprocess", "network"}
    assert _ours() <= before, "the shared files are unlinked once both processes have them open"


def test_a_frames_error_reads_as_without_the_process(proc):
    frames = _frames(1)
    _wait_ready(proc, frames[0])
    with Inferencer(CFG.inference) as ref:
        with pytest.raises(ValueError) as mine:
            proc.predict(frames[0], -0.1)                  # raised by the Inferencer in the child
        with pytest.raises(ValueError) as theirs:
            ref.predict(frames[0], -0.1)
    assert str(mine.value) == str(theirs.value)
    n = proc.frames_in_process
    assert proc.predict(frames[0], PS).p.shape[0] == 3 and proc.frames_in_process == n + 1, \
        "an error in one frame does not end the child"


def test_a_child_that_dies_hands_over_to_the_fallback(proc, caplog):
    frames = _frames(3)
    _wait_ready(proc, frames[0])
    proc._proc.kill()                                      # the child dies between two frames
    proc._proc.wait()
    with Inferencer(CFG.inference) as ref:
        for img in frames:
            assert proc.predict(img, PS).p.tobytes() == ref.predict(img, PS).p.tobytes()
    assert not proc.ready
    assert "the network runs on its thread from now on" in caplog.text


def test_a_child_that_cannot_start_is_not_waited_for(tmp_path, caplog):
    bad = ProcessInferencer(CFG.inference, fallback=Inferencer(CFG.inference), start_timeout_s=60.0)
    bad.cfg = CFG.inference.__class__(**{**CFG.inference.__dict__, "model_path": str(tmp_path / "missing.onnx")})
    try:
        frames = _frames(2)
        with Inferencer(CFG.inference) as ref:
            t_end = time.monotonic() + 60.0
            while "did not start" not in caplog.text:      # the child reports the error, then frames stay here
                assert bad.predict(frames[0], PS).p.tobytes() == ref.predict(frames[0], PS).p.tobytes()
                assert time.monotonic() < t_end
                time.sleep(0.05)
            assert bad.predict(frames[1], PS).p.tobytes() == ref.predict(frames[1], PS).p.tobytes()
        assert bad.frames_in_process == 0 and bad._proc is None
    finally:
        bad.close()


def test_close_ends_the_child_and_leaves_no_files():
    before = _ours()
    inf = ProcessInferencer(CFG.inference, fallback=Inferencer(CFG.inference))
    assert inf.start(wait_s=60.0) and inf.ready, "started ahead of the first frame"
    inf.predict(_frames(1)[0], PS)
    assert inf.frames_in_process == 1
    child = inf._proc
    inf.close()
    assert child.poll() is not None, "the child ended"
    assert _ours() <= before


def test_only_small_grids_go_to_the_child():
    inf = ProcessInferencer(CFG.inference, fallback=Inferencer(CFG.inference), below_grid_px=192 * 192)
    try:
        inf.predict(_frames(1, (512, 512))[0], PS)        # a 256^2 grid: the fallback, no child started
        assert inf._proc is None and inf.frames_in_process == 0
        _wait_ready(inf, _frames(1)[0])                    # a 128^2 grid: the child
    finally:
        inf.close()


def test_pipeline_keeps_one_network_process_for_all_its_overlaps(monkeypatch):
    """The overlap's network thread uses the pipeline's process (made once, closed with the pipeline), so
    a live service or a benchmark that starts many overlaps starts one child; the child also finds the
    atoms (the caller's thread does not); results are those of frame-by-frame processing, byte for byte."""
    import engine.chem.atoms
    from engine.infer.backends import physical_cores
    from engine.overlap import Overlap

    calls = []
    find = engine.chem.atoms.find_atoms
    monkeypatch.setattr(engine.chem.atoms, "find_atoms", lambda *a, **k: calls.append(1) or find(*a, **k))

    if physical_cores() < 2:
        pytest.skip("one core: no overlap network")
    cfg = Config().replace(inference={"backend": "onnx"}, pipeline={"overlap": "on"})
    frames = _frames(6)
    with Pipeline(cfg) as pipe:
        net = pipe.overlap_network()
        assert net is pipe.overlap_network()
        small = net.small
        assert isinstance(small, ProcessInferencer)
        _wait_ready(small, frames[0])
        child = small._proc
        runs = []
        for k in range(2):
            pipe.reset()
            with Overlap(pipe, enabled=True) as ov:
                done = [d for i, f in enumerate(frames) for d in [ov.push(Frame(f, "s", i, 1.0 + i, PS))] if d]
                done += [d for d in [ov.flush()] if d]
            runs.append([_digest(d.result) for d in done])
            assert small._proc is child and small.ready, "the same child serves every overlap"
        assert small.frames_in_process >= 2 * len(frames)
        assert not calls, "the atoms of every frame were found in the network's process"
    assert child.poll() is not None, "closing the pipeline ends the child"
    with Pipeline(cfg.replace(pipeline={"overlap": "off"})) as seq:
        ref = [_digest(seq.process(Frame(f, "s", i, 1.0 + i, PS))) for i, f in enumerate(frames)]
    assert calls, "frame by frame, this thread finds them"
    assert runs[0] == ref
    # (a reset keeps numbering tracks where it left off: the second pass's ids differ, nothing else)
    assert [r[:6] + r[7:] for r in runs[1]] == [r[:6] + r[7:] for r in ref]


def _digest(r) -> tuple:
    a = r.chemistry.atoms
    return (a.xy_px.tobytes(), a.species.tobytes(), a.confidence.tobytes(), a.class_prob.tobytes(),
            a.border.tobytes(), r.chemistry.bonds.tobytes(), r.track_ids.tobytes(),
            [(e.kind, e.atom_id, e.confidence) for e in r.events])


class _FoundAhead:
    """An inferencer whose network 'process' found atoms for exactly the probabilities it returned
    (a stand-in: a marker set of three atoms, so that the test sees which atoms analyze_frame used)."""

    def __init__(self, inf):
        from engine.types import Atoms

        self.inf, self.given = inf, None
        self.marker = Atoms(xy_px=np.array([[100.0, 100.0], [110.0, 100.0], [120.0, 100.0]]),
                            species=np.zeros(3, np.int8), confidence=np.ones(3, np.float32),
                            class_prob=np.tile(np.float32([0, 1, 0]), (3, 1)), border=np.zeros(3, bool),
                            pixel_size_A=PS, frame_shape=(256, 256))

    def predict(self, image, pixel_size_A, **kw):
        self.given = self.inf.predict(image, pixel_size_A, **kw)
        return self.given

    def atoms_for(self, probs):
        return self.marker if probs is self.given else None


@pytest.mark.parametrize("masked", [False, True])
def test_analyze_frame_uses_the_atoms_found_ahead_only_for_those_very_probabilities(monkeypatch, masked):
    """The atoms found with the network's probabilities are used as they are; once the material verdict's
    mask changes the probabilities, the atoms are found again on the masked ones."""
    import engine.pipeline as pl
    from engine.health.material import MaterialVerdict

    mask = np.ones((256, 256), bool)
    mask[:, 200:] = False
    verdict = MaterialVerdict(verdict="graphene", reason="test", lattice_constant_px=24.6, graphene_fraction=mask.mean(),
                              mask=mask if masked else None)
    monkeypatch.setattr(pl, "frame_material", lambda frame: verdict)
    cfg = Config().replace(inference={"backend": "onnx", "threads": 1})
    with Inferencer(cfg.inference) as inf:
        fake = _FoundAhead(inf)
        fc = pl.analyze_frame(Frame(_frames(1)[0], "s", 0, 1.0, pixel_size_A=PS), fake, cfg)
    xy = fc.chemistry.atoms.xy_px
    if masked:
        assert len(xy) > 100 and xy[:, 0].max() < 200, "found again, on the masked probabilities"
    else:
        assert np.array_equal(xy, fake.marker.xy_px), "the atoms found ahead, as they are"
