"""CPU time of each pipeline stage per pixel and per atom across frame sizes (issue 20, criterion 5).

``stemwatch bench pipeline`` reports wall times; on a shared machine those follow the load. This
runs ``Pipeline.process`` on simulated movies (the bench's: 0.1 A/px, a few Si, drift) and charges
``time.process_time`` to each stage (health before/after, material verdict, network, atoms, graph,
SNR, tracking, motif naming), then prints the cost per pixel of the whole frame and the cost per
atom of each stage at every size relative to the first: a stage that grows faster than the number
of atoms shows a ratio above 1 that rises with the size::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python -m lab.stage_scaling --sizes 512,1024,2048 --frames 6

(The network runs with its configured threads; process_time counts all of them.)
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time

import numpy as np

from lab.args import positive_int_list

PS = 0.1


def movie(size: int, n: int) -> list[np.ndarray]:
    from engine.sim.movie import MovieSpec, simulate_movie

    n_si = {256: 2, 512: 5, 1024: 12, 2048: 40}.get(size, 3)
    spec = MovieSpec(n_frames=n, shape_px=(size, size), pixel_size_A=PS, dopants=("si3",) * n_si,
                     drift_A_per_frame=(0.15, 0.08), drift_bound_A=8.0, seed=size)
    return [img for img, _ in simulate_movie(spec)]


def _charge(acc: dict, obj, name: str, label: str) -> None:
    fn = getattr(obj, name)

    @functools.wraps(fn)
    def timed(*a, **k):
        t = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            acc[label] += time.process_time() - t

    setattr(obj, name, timed)


def measure(sizes: list[int], n_frames: int) -> dict:
    """{size: (CPU s per frame by stage, median atoms, CPU s per frame)}; the first 2 frames of each
    size are warm-up."""
    import engine.chem.atoms as atoms_mod
    import engine.chem.chemistry as chem_mod
    import engine.pipeline as pipeline_mod
    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.frame import Frame

    acc: dict = collections.defaultdict(float)
    pipe = Pipeline(Config().replace(inference={"backend": "onnx"}))
    for obj, name, label in ((pipeline_mod, "frame_material", "material"), (pipe.inferencer, "predict", "network"),
                             (atoms_mod, "contrast_maps", "atoms"), (atoms_mod, "find_atoms", "atoms"),
                             (pipeline_mod, "drop_outside", "atoms"), (chem_mod, "build_chemistry", "graph"),
                             (pipeline_mod, "estimate_snr", "snr"), (pipe.health, "before", "health_before"),
                             (pipe.health, "after", "health_after"), (pipe.tracker, "update", "tracking"),
                             (pipe.motifs, "observe", "motifs")):
        _charge(acc, obj, name, label)
    out = {}
    try:
        for size in sizes:
            frames = movie(size, n_frames + 2)
            pipe.reset()
            natoms = []
            for i, img in enumerate(frames):
                if i == 2:
                    acc.clear()
                    natoms = []
                    t0 = time.process_time()
                r = pipe.process(Frame(data=img, series=f"s{size}", seq=i, t_acquired=time.time(), pixel_size_A=PS))
                natoms.append(len(r.chemistry.atoms))
            total = (time.process_time() - t0) / n_frames
            out[size] = ({k: v / n_frames for k, v in acc.items()}, float(np.median(natoms)), total)
            print(f"{size}x{size}: {int(np.median(natoms))} atoms, {1e3 * total:.1f} ms CPU per frame: "
                  + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in sorted(out[size][0].items())), flush=True)
    finally:
        pipe.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.stage_scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=positive_int_list, default="512,1024,2048",
                    help="frame sides in px (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=6, help="timed frames per size (default: %(default)s)")
    args = ap.parse_args(argv)
    sizes = args.sizes
    if args.frames < 1:
        print("--frames must be >= 1", file=sys.stderr)
        return 2
    res = measure(sizes, args.frames)
    base_stages, base_atoms, base_total = res[sizes[0]]
    for size in sizes[1:]:
        stages, atoms, total = res[size]
        px, ra = (size / sizes[0]) ** 2, atoms / base_atoms
        per_atom = ", ".join(f"{k} {v / base_stages[k] / ra:.2f}" for k, v in sorted(stages.items())
                             if base_stages.get(k))
        print(f"{size} vs {sizes[0]}: pixels x{px:.0f}, atoms x{ra:.1f}; CPU per pixel x{total / base_total / px:.2f}; "
              f"per atom: {per_atom}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
