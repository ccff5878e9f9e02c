"""`stemwatch simulate`: a recording plus truth on disk, and a live stream over a real socket."""

import subprocess
import sys
import time

import numpy as np
import zmq

from engine.sim.movie import run_movie, scenario
from engine.sim.truth import load_truth
from stemwatch.cli import main
from streamer.protocol import decode
from streamer.recording import iter_frames
from lab.net import free_tcp_port


def test_simulate_out_round_trip(tmp_path):
    out = tmp_path / "sw.swrec"
    rc = main(["simulate", "--out", str(out), "--scenario", "switching", "--frames", "12", "--size", "128",
               "--seed", "4", "--frame-time", "0.5", "-q"])
    assert rc == 0
    frames = list(iter_frames(out))
    gt = load_truth(out)
    assert [f.seq for f in frames] == list(range(12)) == [f.seq for f in gt.frames]
    assert all(f.data.shape == (128, 128) and f.data.dtype == np.uint16 for f in frames)
    assert frames[0].pixel_size_A == gt.pixel_size_A == 0.1
    assert np.allclose(np.diff([f.t_acquired for f in frames]), 0.5)
    assert frames[0].meta["truth"] == "sw.truth.npz" and frames[0].meta["frame_time_s"] == 0.5
    assert [e["frame"] for e in gt.events if e["kind"] == "si_3_to_4"] == [8]
    # the recorded pixels are the simulator's own for that spec and seed
    imgs, gt2 = run_movie(scenario("switching", n_frames=12, shape_px=(128, 128), seed=4, frame_time_s=0.5))
    assert all(np.array_equal(f.data, im) for f, im in zip(frames, imgs))
    assert gt2.events == gt.events


def test_simulate_live_publishes_frames_at_the_frame_time():
    ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.connect(ep)
    proc = subprocess.Popen([sys.executable, "-m", "stemwatch", "simulate", "--bind", ep, "--frames", "6",
                             "--frame-time", "0.3", "--scenario", "switching", "--size", "128", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        msgs = []
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        deadline = time.time() + 120                   # hang guard only
        while time.time() < deadline:
            if poller.poll(500):
                m = decode(sock.recv_multipart())
                msgs.append(m)
                if m.type == "end":
                    break
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close(0)
        ctx.term()
    assert [m.type for m in msgs] == ["start"] + ["frame"] * 6 + ["end"]
    fr = [m.frame for m in msgs if m.type == "frame"]
    assert [f.seq for f in fr] == list(range(6)) and fr[0].data.shape == (128, 128)
    dt = np.diff([f.t_acquired for f in fr])
    # paced, never faster than asked (a busy machine can only make it slower: no upper bound here)
    assert dt.mean() >= 0.3 - 0.09
