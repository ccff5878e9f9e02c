"""Atoms + graph, this checkout against another commit, interleaved in one process (issue 20).

The pipeline's atoms + graph stage (what :func:`engine.pipeline.analyze_frame` times as
``atoms_graph``: contrast maps, :func:`engine.chem.find_atoms`, the edge drop,
:func:`engine.chem.build_chemistry`, :func:`engine.health.atoms.estimate_snr`) of ``--old``'s
``engine/chem`` and ``engine/health`` (copied from git into a temporary package) and of this
checkout run alternately on the same network outputs, many times: per-stage medians of CPU time
(``time.process_time``, one thread) and wall time, and a check that both find the same atoms
(largest position difference, species, bonds, defects). On a loaded machine compare the two
columns, not the absolute figures::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python -m lab.chem.compare_speed --old cb5e6b4 --sizes 512,1024,2048
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from lab.args import positive_int_list

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("maps", "find", "build", "snr")


PS = 0.1


def frame(size: int) -> np.ndarray:
    """The first frame ``stemwatch bench pipeline`` simulates at ``size`` x ``size`` (0.1 A/px, graphene
    with a few Si, default HAADF imaging at 1e5 e/A^2, seed = size)."""
    from engine.sim.movie import MovieSpec, simulate_movie

    n_si = {256: 2, 512: 5, 1024: 12, 2048: 40}.get(size, 3)
    spec = MovieSpec(n_frames=1, shape_px=(size, size), pixel_size_A=PS, dopants=("si3",) * n_si,
                     drift_A_per_frame=(0.15, 0.08), drift_bound_A=8.0, seed=size)
    return next(iter(simulate_movie(spec)))[0]


def old_modules(commit: str, into: Path):
    """(atoms, chemistry, health.atoms) modules of ``commit``'s engine/chem and engine/health,
    imported as packages ``oldchem`` / ``oldhealth`` from ``into``."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "engine/chem", "engine/health"],
                         check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    for sub, name in (("chem", "oldchem"), ("health", "oldhealth")):
        (into / "engine" / sub).rename(into / name)
    for f in list((into / "oldchem").glob("*.py")) + list((into / "oldhealth").glob("*.py")):
        f.write_text(f.read_text().replace("engine.chem", "oldchem").replace("engine.health", "oldhealth"))
    sys.path.insert(0, str(into))
    return tuple(importlib.import_module(m) for m in ("oldchem.atoms", "oldchem.chemistry", "oldhealth.atoms"))


def new_modules():
    return tuple(importlib.import_module(m) for m in ("engine.chem.atoms", "engine.chem.chemistry",
                                                        "engine.health.atoms"))


def run_stage(mods, img: np.ndarray, probs, cfg):
    """(Chemistry, snr, wall seconds per stage, CPU seconds per stage)."""
    atoms_m, chem_m, health_m = mods
    cc = cfg.chemistry
    t, q = [time.perf_counter()], [time.process_time()]

    def mark():
        t.append(time.perf_counter())
        q.append(time.process_time())

    maps = atoms_m.contrast_maps(img, float(probs.frame_pixel_size_A))
    mark()
    atoms = health_m.drop_outside(atoms_m.find_atoms(probs, cc, img, maps), img.shape, cfg.health.edge_drop_A)
    mark()
    chem = chem_m.build_chemistry(atoms, cc, None, img, maps)
    mark()
    snr = health_m.estimate_snr(np.asarray(img), chem, *((maps,) if _takes_maps(health_m.estimate_snr) else ()))
    mark()
    return chem, snr, np.diff(t), np.diff(q)


def _takes_maps(fn) -> bool:
    """Whether ``estimate_snr`` takes the frame's contrast maps (as the pipeline then passes them)."""
    return "maps" in inspect.signature(fn).parameters


def same(a, b) -> dict:
    """How the two stage outputs differ."""
    out = {"atoms": (len(a.atoms), len(b.atoms))}
    if len(a.atoms) == len(b.atoms):
        out["max_shift_A"] = float(np.abs(a.atoms.xy_px - b.atoms.xy_px).max() * a.atoms.pixel_size_A) \
            if len(a.atoms) else 0.0
        out["same_species"] = bool(np.array_equal(a.atoms.species, b.atoms.species))
        out["same_bonds"] = bool(np.array_equal(a.bonds, b.bonds))
    out["same_defects"] = ([(d.kind, d.formula, tuple(d.members)) for d in a.defects]
                           == [(d.kind, d.formula, tuple(d.members)) for d in b.defects])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.chem.compare_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default="cb5e6b4", help="git commit to compare with (default: %(default)s)")
    ap.add_argument("--sizes", type=positive_int_list, default="512,1024,2048",
                    help="frame sides in px, 0.1 A/px (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=20, help="runs of each version per size (default: %(default)s)")
    args = ap.parse_args(argv)
    sizes = args.sizes
    from engine.infer import Inferencer
    from stemwatch.config import Config

    cfg = Config().replace(inference={"backend": "onnx"})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            old = old_modules(args.old, Path(tmp))
        except subprocess.CalledProcessError as exc:
            print(f"--old {args.old}: git archive failed: {exc.stderr.decode().strip()}", file=sys.stderr)
            return 2
        new = new_modules()
        with Inferencer(cfg.inference) as inf:
            for size in sizes:
                img = frame(size)
                probs = inf.predict(img, PS)
                a, _, _, _ = run_stage(old, img, probs, cfg)
                b, _, _, _ = run_stage(new, img, probs, cfg)
                print(f"{size}x{size}: {same(a, b)}")
                times = {"old": ([], []), "new": ([], [])}
                for _ in range(args.repeats):                      # interleaved
                    for name, mods in (("old", old), ("new", new)):
                        _, _, wall, cpu = run_stage(mods, img, probs, cfg)
                        times[name][0].append(wall)
                        times[name][1].append(cpu)
                for name in ("old", "new"):
                    wall, cpu = (np.array(x) * 1e3 for x in times[name])
                    per = "  ".join(f"{s} {v:.2f}" for s, v in zip(STAGES, np.median(cpu, 0)))
                    print(f"  {name}: CPU ms {per}  total {np.median(cpu.sum(1)):.2f}; "
                          f"wall total {np.median(wall.sum(1)):.2f}")
                ratio = np.median(np.array(times["old"][1]).sum(1)) / np.median(np.array(times["new"][1]).sum(1))
                print(f"  old / new CPU: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
