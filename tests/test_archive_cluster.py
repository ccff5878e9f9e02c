"""``stemwatch analyze INPUT... --scheduler``: a real Dask LocalCluster of worker processes gives the
same results as one process, loses nothing when a worker is SIGKILLed, reports a corrupt input while
the others finish, and stops cleanly on Ctrl-C. Two workers, one thread each, one ONNX thread."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from engine.analyze import analyze_file  # noqa: E402
from engine.archive import analyze_archive, expand_inputs, output_names, parse_scheduler  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from stemwatch.config import Config  # noqa: E402
from streamer.chunks import chunk_plan, plan_input, read_chunk  # noqa: E402
from streamer.importers import open_frames  # noqa: E402

from _track_lattice import lattice_scene, render_frame  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REC = ROOT / "replay_data" / "01_switching_256.swrec"
N_LONG = 240                     # frames of the Ctrl-C test's input (the bundled recording, 5 times)
LIMIT = 12
CFG = Config().replace(inference={"backend": "onnx", "threads": 1})


def _npy_stack(path, n=6, size=128, ps=0.1):
    pts, sp = lattice_scene(size, ps, n_si=1, seed=3)
    rng = np.random.default_rng(3)
    np.save(path, np.stack([render_frame((pts + [0.1 * t, 0.05 * t]) / ps, sp, (size, size), ps, rng=rng)
                            for t in range(n)]))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    _npy_stack(d / "stack.npy")
    torn = d / "torn.swrec"                       # a recorder killed mid-write: a few whole frames, then a torn one
    torn.write_bytes(REC.read_bytes()[: 16 + 6 * (256 * 256 * 2 + 300)])
    (d / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00garbage, not an array header" + bytes(200))
    return {"rec": REC, "npy": d / "stack.npy", "torn": torn, "bad": d / "bad.npy"}


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """Single-process ``analyze`` of each good input, plus its FrameResults from Pipeline.process."""
    d = tmp_path_factory.mktemp("reference")
    out = {}
    for name in ("rec", "npy", "torn"):
        px = 0.1 if name == "npy" else None
        analyze_file(inputs[name], d / name, CFG, pixel_size_A=px, limit=LIMIT, progress=False)
        with Pipeline(CFG) as pipe:
            frames = list(open_frames(inputs[name], pixel_size_A=px))[:LIMIT]
            out[name] = (d / name, [pipe.process(f) for f in frames])
    return out


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  resources={"GPU": 1}) as cl, \
            distributed.Client(cl) as c:
        c.wait_for_workers(2)
        yield c


def _same_files(a: Path, b: Path):
    for name in ("atoms.csv", "events.jsonl", "frames.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for k in ("frames", "frames_with_error", "series", "atom_rows", "species_rows", "tracks", "events",
              "events_by_kind", "drift_A_per_frame", "verdicts"):
        assert sa[k] == sb[k], k


def _same_results(ref, got):
    assert [r.seq for r in ref] == [r.seq for r in got]
    for a, b in zip(ref, got):
        assert a.series == b.series and a.t_acquired == b.t_acquired and a.error == b.error
        np.testing.assert_allclose(b.chemistry.atoms.xy_px, a.chemistry.atoms.xy_px, rtol=0, atol=1e-6)
        np.testing.assert_allclose(b.chemistry.atoms.confidence, a.chemistry.atoms.confidence, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(b.chemistry.atoms.species, a.chemistry.atoms.species)
        np.testing.assert_array_equal(b.chemistry.bonds, a.chemistry.bonds)
        np.testing.assert_array_equal(b.track_ids, a.track_ids)
        np.testing.assert_allclose(b.drift_px, a.drift_px, rtol=0, atol=1e-6)
        assert [(d.kind, d.formula, d.signature, d.motif) for d in b.chemistry.defects] == \
               [(d.kind, d.formula, d.signature, d.motif) for d in a.chemistry.defects]
        # (as JSON: a fov_jump event's position is NaN, which equals nothing)
        assert [json.dumps(e.to_dict(), sort_keys=True) for e in b.events] == \
               [json.dumps(e.to_dict(), sort_keys=True) for e in a.events]


# ------------------------------------------------------------------------------------------- no cluster

def test_scheduler_specs_and_inputs(tmp_path, inputs):
    assert parse_scheduler("local") == ("local", None)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    assert parse_scheduler("node7:8786") == ("address", "tcp://node7:8786")
    for bad in ("local:0", "local:x", "remote", "http://x:1"):
        with pytest.raises(ValueError):
            parse_scheduler(bad)
    d = tmp_path / "a"
    d.mkdir()
    for name in ("x.swrec", "y.swrec"):
        (d / name).write_bytes(REC.read_bytes()[:16])
    (d / "y.truth.npz").write_bytes(b"not a recording")
    # a folder gives its recordings; a glob its matches; duplicates are dropped, order kept
    got = expand_inputs([str(d / "y.swrec"), str(d), str(tmp_path / "*" / "*.npz")])
    assert got == [d / "y.swrec", d / "x.swrec", d / "y.truth.npz"]
    with pytest.raises(FileNotFoundError):
        expand_inputs([str(tmp_path / "nothing*.swrec")])
    assert output_names([Path("a/x.swrec"), Path("b/x.swrec"), Path("x.npy")]) == ["x", "x-2", "x-3"]


def test_chunks_are_the_frames_open_frames_yields(inputs):
    for name, px in (("rec", None), ("npy", 0.1), ("torn", None)):
        ref = list(open_frames(inputs[name], pixel_size_A=px))
        plan = plan_input(inputs[name], pixel_size_A=px)
        assert plan.n_frames == len(ref)
        got = [f for a in range(0, plan.n_frames, 4)
               for f in read_chunk(*chunk_plan(plan, a, min(a + 4, plan.n_frames)))]
        for a, b in zip(ref, got, strict=True):
            assert (a.series, a.seq, a.t_acquired, a.pixel_size_A) == (b.series, b.seq, b.t_acquired, b.pixel_size_A)
            assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)
    assert plan.note and "truncated" in plan.note          # the torn recording says why it ends early
    assert plan_input(inputs["rec"]).note is None


def test_a_recording_changed_after_planning_is_an_error_not_wrong_frames(tmp_path):
    from streamer.importers import FileImportError

    rec = tmp_path / "r.swrec"
    rec.write_bytes(REC.read_bytes())
    plan = plan_input(rec)
    data = bytearray(rec.read_bytes())
    data[plan.offsets[5] + 2000] ^= 0xFF                 # one pixel byte of frame 5
    rec.write_bytes(bytes(data))
    assert len(list(read_chunk(plan, 0, 5))) == 5
    with pytest.raises(FileImportError, match="payload checksum"):
        list(read_chunk(plan, 4, 8))
    rec.write_bytes(bytes(data[: plan.offsets[9]]))       # cut short
    with pytest.raises(FileImportError, match="missing"):
        list(read_chunk(plan, 9, 10))


def test_analyze_without_scheduler_never_imports_dask(tmp_path, inputs):
    code = ("import sys; from stemwatch.cli import main; "
            f"rc = main(['analyze', {str(inputs['npy'])!r}, '--out', {str(tmp_path / 'o')!r}, '--pixel-size', '0.1', "
            "'--backend', 'onnx', '--quiet', '--limit', '2']); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')); "
            "print('DASK', bad); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert "DASK []" in p.stdout
    assert (tmp_path / "o" / "atoms.csv").exists() and not (tmp_path / "o" / "index.json").exists()


def test_cli_refuses_bad_cluster_arguments(tmp_path, inputs, capsys):
    from stemwatch.cli import main

    assert main(["analyze", str(inputs["rec"]), str(inputs["npy"]), "--out", str(tmp_path / "o")]) == 2
    assert "--scheduler" in capsys.readouterr().err
    assert main(["analyze", str(inputs["rec"]), "--out", str(tmp_path / "o"), "--scheduler", "local:0"]) == 2
    assert "local:N" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "none*.swrec"), "--out", str(tmp_path / "o"), "--scheduler", "local"]) == 2
    assert "matches no file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- LocalCluster

def test_cluster_results_identical_and_a_corrupt_input_reported(tmp_path, inputs, reference, client):
    got: dict[int, list] = {}
    order = ["rec", "bad", "npy", "torn"]
    index = analyze_archive([str(inputs[k]) for k in order], tmp_path / "out", CFG, scheduler=client,
                            pixel_size_A=None, limit=LIMIT, chunk_frames=3, progress=False,
                            on_result=lambda i, r: got.setdefault(i, []).append(r))
    assert json.loads((tmp_path / "out" / "index.json").read_text())["inputs"] == index["inputs"]
    assert index["status"] == "incomplete"
    e = {k: index["inputs"][i] for i, k in enumerate(order)}
    assert e["bad"]["status"] == "failed" and "bad.npy" in e["bad"]["reason"] and e["bad"]["frames"] is None
    assert json.loads((tmp_path / "out" / "bad" / "summary.json").read_text())["complete"] is False
    # the npy stack has no calibration: it fails too, with the importer's reason, and nothing else is affected
    assert e["npy"]["status"] == "failed" and "pixel size" in e["npy"]["reason"]
    assert 3 <= len(reference["torn"][1]) < 48
    for k, n in (("rec", LIMIT), ("torn", len(reference["torn"][1]))):
        assert e[k]["status"] == "ok" and e[k]["frames"] == e[k]["frames_done"] == n
        assert e[k]["verdicts"] == {"ok": n}
        _same_files(reference[k][0], tmp_path / "out" / e[k]["out"])
        _same_results(reference[k][1], got[order.index(k)])
    assert "truncated" in e["torn"]["note"]
    s = json.loads((tmp_path / "out" / "01_switching_256" / "summary.json").read_text())
    assert s["complete"] is True and s["frames_expected"] == LIMIT and "1 thread" in s["backend"]


def _contaminated_jump_stack(path):
    """5 frames of a graphene field with contamination walking 0.3 A a frame, then 4 of another such field
    (the stage moved: a fov_jump after frame 5's atoms), 512^2 at 0.2 A/px (engine.sim MaterialMovie)."""
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec

    def movie(seed, n):
        spec = MovieSpec(n_frames=n, shape_px=(512, 512), pixel_size_A=0.2, drift_A_per_frame=(0.0, 0.0),
                         drift_bound_A=0.0, seed=seed)
        return [img for img, _ in MaterialMovie(spec, "graphene_hole", contamination_step_A=0.3,
                                                contamination=True).frames()]

    np.save(path, np.stack(movie(166, 5) + movie(167, 4)).astype(np.float32))


def test_series_state_carried_across_chunks_and_a_jump_inside_one_identical(tmp_path, client):
    """What analyze_frame carries from frame to frame (the contamination region held, the field's change
    from the last frame, the material cadence: engine.pipeline.SeriesState) goes from chunk to chunk;
    a jump of the field found by tracking inside a chunk has its later frames analysed again. Before,
    every chunk started afresh and the Si and atoms of a contaminated series differed from one process."""
    stack = tmp_path / "contaminated.npy"
    _contaminated_jump_stack(stack)
    analyze_file(stack, tmp_path / "one", CFG, pixel_size_A=0.2, progress=False)
    with Pipeline(CFG) as pipe:
        ref = [pipe.process(f) for f in open_frames(stack, pixel_size_A=0.2)]
    got = []
    index = analyze_archive([str(stack)], tmp_path / "out", CFG, scheduler=client, pixel_size_A=0.2, chunk_frames=4,
                            progress=False, on_result=lambda i, r: got.append(r))
    assert index["status"] == "complete" and index["inputs"][0]["frames_done"] == 9
    # the case is the one meant: contamination found and judged with the series' state, a jump at frame 5
    # (chunk 4-7, not its last frame)
    reasons = " ".join(str(getattr(r.material, "reason", "")) for r in ref)
    assert "moving contamination" in reasons or "held" in reasons, reasons
    assert [e.frame for r in ref for e in r.events if e.kind == "fov_jump"] == [5]
    _same_files(tmp_path / "one", tmp_path / "out" / "contaminated")
    _same_results(ref, got)


class _Restrictions(distributed.diagnostics.plugin.SchedulerPlugin):
    """Records the resource restrictions of every frame task the scheduler starts."""

    name = "test-restrictions"

    def __init__(self):
        self.seen = {}

    async def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing" and str(key).startswith("analyze-"):
            self.seen[str(key)] = self.scheduler.tasks[key].resource_restrictions


def test_cluster_by_address_with_resources_identical(tmp_path, inputs, reference, client):
    got: dict[int, list] = {}
    client.register_plugin(_Restrictions())
    try:
        # a scheduler address (a second client of the same cluster), frame tasks holding a GPU each
        index = analyze_archive([str(inputs["npy"])], tmp_path / "out", CFG, scheduler=client.scheduler.address,
                                pixel_size_A=0.1, chunk_frames=4, progress=False, resources={"GPU": 1},
                                on_result=lambda i, r: got.setdefault(i, []).append(r))
        seen = client.run_on_scheduler(lambda dask_scheduler: dict(dask_scheduler.plugins["test-restrictions"].seen))
    finally:
        client.unregister_scheduler_plugin("test-restrictions")
    assert index["status"] == "complete" and index["inputs"][0]["frames_done"] == 6
    assert index["workers"] == 2 and index["resources"] == {"GPU": 1}
    assert len(seen) == 2 and all(r == {"GPU": 1} for r in seen.values())
    _same_files(reference["npy"][0], tmp_path / "out" / "stack")
    _same_results(reference["npy"][1], got[0])


def test_worker_sigkilled_mid_run_loses_nothing(tmp_path, inputs, reference, client):
    killed = []

    def kill_a_busy_worker():                 # SIGKILL the first worker seen running an analyze task
        deadline = time.time() + 120
        while time.time() < deadline:
            busy = {a: [k for k in keys if str(k).startswith("analyze-")] for a, keys in client.processing().items()}
            busy = {a: keys for a, keys in busy.items() if keys}
            if busy:
                addr, keys = next(iter(busy.items()))
                pid = client.run(os.getpid, workers=[addr])[addr]
                os.kill(pid, signal.SIGKILL)
                killed.append((addr, keys))
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    got: list = []
    index = analyze_archive([str(inputs["rec"])], tmp_path / "out", CFG, scheduler=client, limit=LIMIT,
                            chunk_frames=1, progress=False, on_result=lambda i, r: got.append(r))
    killer.join(5)
    assert killed, "a worker running a task was killed"
    starts = [e[1] for e in client.story(*killed[0][1]) if e[0] == "scheduler" and e[3] == "processing"]
    assert max(starts.count(k) for k in killed[0][1]) >= 2, "the killed worker's task ran again elsewhere"
    assert index["status"] == "complete" and index["inputs"][0]["frames_done"] == LIMIT
    _same_files(reference["rec"][0], tmp_path / "out" / "01_switching_256")
    _same_results(reference["rec"][1], got)


def test_ctrl_c_between_writing_and_counting_a_frame_keeps_files_and_index_agreed(tmp_path, inputs, client,
                                                                                  monkeypatch):
    """CI caught summary.json saying 18 frames and index.json 17: the Ctrl-C landed after a frame was
    written but before it was counted. Interrupt exactly there and check both files agree."""
    from engine import analyze as analyze_mod
    real_write = analyze_mod.ResultWriter.write

    def write_then_interrupt(self, r):
        real_write(self, r)
        if self.n_frames == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(analyze_mod.ResultWriter, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        analyze_archive([str(inputs["rec"])], tmp_path / "out", CFG, scheduler=client, limit=LIMIT,
                        chunk_frames=1, progress=False)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    e = index["inputs"][0]
    s = json.loads((tmp_path / "out" / "01_switching_256" / "summary.json").read_text())
    assert index["status"] == "cancelled" and s["status"] == "cancelled" and s["complete"] is False
    assert s["frames"] == e["frames_done"] == 3
    frames_csv = (tmp_path / "out" / "01_switching_256" / "frames.csv").read_text().splitlines()
    assert len(frames_csv) - 1 == 3


def _session_pids(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getsid(int(d.name)) == sid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_ctrl_c_cancels_cleanly(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"inference": {"threads": 1}}))
    out = tmp_path / "out"
    # long enough that the Ctrl-C lands mid-run on a quiet machine too (the bundled 48-frame recording
    # was all analysed in ~2 s once the network got faster, before the test saw 2 frames in index.json)
    rec = tmp_path / "01_switching_256.npy"
    frames = [f.data for f in open_frames(REC)]
    np.save(rec, np.stack(frames * (N_LONG // len(frames))))
    cmd = [sys.executable, "-m", "stemwatch", "analyze", str(rec), "--out", str(out), "--scheduler", "local:1",
           "--chunk-frames", "1", "--backend", "onnx", "--config", str(cfg), "--pixel-size", "0.1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    chunks: list = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: p.stderr.read(256), "")), daemon=True)
    reader.start()
    try:
        # wait until frames are being analysed: the progress bar (written as frames complete) shows >= 2
        # (index.json is rewritten at most once a second: on a loaded machine a 240-frame run ended first)
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            done = [int(n) for n in re.findall(rf"(\d+)/{N_LONG} \[", "".join(chunks))]
            if done and max(done) >= 2:
                break
            time.sleep(0.05)
        assert p.poll() is None, "".join(chunks)[-3000:]
        os.killpg(p.pid, signal.SIGINT)                # Ctrl-C in a terminal: the whole process group
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    reader.join(30)
    err = "".join(chunks)
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err
    # the dashboard link of the local cluster, and one progress bar: frames done / total, frames/s, ETA
    assert "local cluster of 1 worker process, dashboard http://" in err
    assert re.search(rf"analyze 1 input: +\d+%\|.*\| \d+/{N_LONG} \[\d\d:\d\d<[\d:?]+, +[\d.?]+(frame/s|s/frame)", err), err
    index = json.loads((out / "index.json").read_text())
    assert index["status"] == "cancelled"
    e = index["inputs"][0]
    assert e["status"] == "cancelled" and 2 <= e["frames_done"] < N_LONG
    s = json.loads((out / "01_switching_256" / "summary.json").read_text())
    assert s["complete"] is False and s["status"] == "cancelled" and s["frames"] == e["frames_done"]
    deadline = time.time() + 120                     # no worker or nanny process is left behind (a hang guard)
    while _session_pids(p.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert _session_pids(p.pid) == []
