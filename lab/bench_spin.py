"""Thread settings of the CPU pipeline side by side (issue 20, criterion 3): overlap off / on, the
network's ONNX Runtime threads spinning or sleeping between operators, one or two threads for the
overlapped network. Same process, the variants interleaved (forward then reversed order), medians of
the repeats: frames/s of a pass over pre-rendered frames (lab.stage_scaling's simulated movie, 0.1 A/px) and
the process's CPU time per frame (all threads: spinning shows here) and the stage medians::

    PYTHONPATH=$PWD python -m lab.bench_spin --sizes 256,512 --repeats 3 --frames 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from lab.args import positive_int_list

VARIANTS = {  # name: (inference settings, overlap)
    "off spin": ({"cpu_spin_wait": True}, False),
    "off nospin": ({}, False),
    "on 1thr (default)": ({}, True),
    "on 2thr nospin": ({"threads": 2}, True),
    "on 2thr spin": ({"threads": 2, "cpu_spin_wait": True}, True),
}


def one_pass(pipe, frames: list, overlap: bool) -> tuple[float, float, dict]:
    from engine.overlap import Overlap
    from streamer.frame import Frame

    pipe.reset()
    done, stages = [], {}
    series = f"spin-{time.time()}"                 # one series per pass (the material check runs once)
    with Overlap(pipe, enabled=overlap) as ov:
        for i, img in enumerate(frames + [None]):
            d = ov.flush() if img is None else ov.push(
                Frame(data=img, series=series, seq=i, t_acquired=time.time(), pixel_size_A=0.1))
            if d is not None:
                done.append((time.perf_counter(), time.process_time()))
                for k, v in d.result.timings_s.items():
                    stages.setdefault(k, []).append(v)
    t = done[2:]                                   # after two warm-up frames
    n = len(t) - 1
    return n / (t[-1][0] - t[0][0]), 1e3 * (t[-1][1] - t[0][1]) / n, {k: 1e3 * float(np.median(v[2:]))
                                                                        for k, v in stages.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.bench_spin", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=positive_int_list, default="256,512", help="frame sides (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="passes per variant (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=12, help="frames per pass (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.frames < 4:
        print("--repeats must be >= 1 and --frames >= 4", file=sys.stderr)
        return 2
    from engine.pipeline import Pipeline
    from lab.stage_scaling import movie
    from stemwatch.config import Config

    base = Config().replace(inference={"backend": "onnx"})
    pipes = {name: (Pipeline(base.replace(inference=inf)), ov) for name, (inf, ov) in VARIANTS.items()}
    try:
        for size in args.sizes:
            frames = movie(size, args.frames)
            res: dict = {}
            l0 = os.getloadavg()[0]
            for r in range(args.repeats):
                names = list(pipes) if r % 2 == 0 else list(pipes)[::-1]
                for name in names:
                    res.setdefault(name, []).append(one_pass(pipes[name][0], frames, pipes[name][1]))
            print(f"== {size}x{size}, load average {l0:.1f}-{os.getloadavg()[0]:.1f}")
            for name, runs in res.items():
                st = {k: np.median([x[2].get(k, np.nan) for x in runs]) for k in runs[0][2]}
                print(f"{name:18s}: {np.median([x[0] for x in runs]):6.1f} frames/s, "
                      f"{np.median([x[1] for x in runs]):6.1f} ms CPU/frame; "
                      + " ".join(f"{k} {st[k]:.1f}" for k in ("health", "material", "network", "atoms_graph",
                                                               "tracking", "total") if k in st), flush=True)
    finally:
        for p, _ in pipes.values():
            p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
