"""Frozen atoms + bond graph of a few simulated frames: "same atoms" as a test (issue 20).

Speed work on the atom finder and the graph (:mod:`engine.chem.atoms`, :mod:`engine.chem.graph`,
:mod:`engine.chem.chemistry`, :func:`engine.health.atoms.estimate_snr`) must not change what they
find. This module keeps, for :data:`FRAMES` (simulated: dopants, a hole, 5-8-5, Stone-Wales,
vacancies; two pixel sizes; two doses), the frame, the network's class probabilities for it
(quantised to 1/255, so that the test does not depend on the network or its precision) and what
:func:`engine.pipeline.analyze_frame` made of them: atom positions, species, bonds, coordination,
defects and the estimated SNR. ``tests/test_chem_reference.py`` runs the current code on the stored
frames and probabilities and compares (positions within 0.01 A, everything else exact).

Write it only on purpose, from the code whose outputs are the reference, and say so in the commit::

    PYTHONPATH=$PWD python -m lab.chem.atoms_reference --write

:data:`BENCH_FRAMES` (``--bench``, file :data:`BENCH_FILE`) holds the size the issue's atoms + graph
target is set at: one 512x512 frame of ``stemwatch bench pipeline``'s kind (0.1 A/px, ~1,000 atoms,
five Si), written from the code before issue 20's second round (the h20 branch point, 2416d17).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_FILE = ROOT / "tests" / "data" / "atoms_reference.npz"
BENCH_FILE = ROOT / "tests" / "data" / "atoms_reference_512.npz"

#: (name, MovieSpec keywords), one frame each: three pixel sizes (the frame is block-averaged by 1,
#: 2 or 3 for the contrast checks), two doses
FRAMES = (
    ("dopants", dict(shape_px=(256, 256), pixel_size_A=0.1, dopants=("si3", "si4", "pair"), seed=11)),
    ("defects", dict(shape_px=(320, 320), pixel_size_A=0.14, dopants=("si3",),
                     extras=("hole", "585", "vacancy", "stone_wales"), seed=12)),
    ("fine_lowdose", dict(shape_px=(384, 384), pixel_size_A=0.06, dopants=("dimer", "si4"), dose_e_per_A2=2e4,
                          seed=13)),
)

#: the bench-size frame (--bench): 512x512 at 0.1 A/px, five 3-fold Si, ~1,000 atoms
BENCH_FRAMES = (
    ("bench512", dict(shape_px=(512, 512), pixel_size_A=0.1, dopants=("si3",) * 5, seed=512)),
)


def simulate(spec_kw: dict) -> np.ndarray:
    from engine.sim.movie import MovieSpec, simulate_movie

    spec = MovieSpec(n_frames=1, **spec_kw)
    return next(iter(simulate_movie(spec)))[0]


class StoredProbabilities:
    """An inferencer that returns stored class probabilities (the frozen network output)."""

    def __init__(self, probs):
        self.probs = probs
        self.model_pixel_size_A = float(probs.pixel_size_A)

    def predict(self, image, pixel_size_A):
        return self.probs


def quantise(p: np.ndarray) -> np.ndarray:
    """(3, h, w) probabilities -> (2, h, w) uint8 C and Si in steps of 1/255 (background: the rest)."""
    return np.clip(np.rint(np.asarray(p[1:], np.float64) * 255), 0, 255).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise`: (3, h, w) float32 summing to 1 (to rounding)."""
    cs = q.astype(np.float32) / np.float32(255)
    bg = np.maximum(np.float32(1) - cs[0] - cs[1], np.float32(0))
    return np.concatenate([bg[None], cs]).astype(np.float32)


def analyze(image: np.ndarray, probs, pixel_size_A: float):
    """(Chemistry, SNR) of one frame from the given probabilities, through
    :func:`engine.pipeline.analyze_frame` (material check off: that is another stage's business)."""
    from engine.health.atoms import estimate_snr
    from engine.pipeline import analyze_frame
    from stemwatch.config import Config
    from streamer.frame import Frame

    cfg = Config().replace(chemistry={"material_check": False})
    frame = Frame(data=image, series="reference", seq=0, t_acquired=0.0, pixel_size_A=pixel_size_A)
    fc = analyze_frame(frame, StoredProbabilities(probs), cfg)
    if fc.error is not None or fc.chemistry is None:
        raise RuntimeError(f"analyze_frame failed on the reference frame: {fc.error}")
    return fc.chemistry, float(estimate_snr(image, fc.chemistry))


def outputs(chem, snr: float) -> dict:
    """The compared outputs of one frame as plain arrays."""
    defects = sorted((d.kind, d.formula, tuple(int(m) for m in np.sort(d.members))) for d in chem.defects)
    return {"xy_px": np.asarray(chem.atoms.xy_px, np.float64), "species": np.asarray(chem.atoms.species, np.int8),
            "bonds": np.asarray(chem.bonds, np.int32), "coordination": np.asarray(chem.coordination, np.int16),
            "defects": np.array([f"{k}|{f}|{','.join(map(str, m))}" for k, f, m in defects], dtype=str),
            "snr": np.float64(snr)}


def build(frames=FRAMES) -> dict:
    """Simulate ``frames`` (default :data:`FRAMES`), run the network (the configured CPU backend)
    and the current finder; -> the arrays of the reference file."""
    from engine.infer import Inferencer
    from engine.types import Probabilities
    from stemwatch.config import Config

    out = {}
    cfg = Config().replace(inference={"backend": "onnx"})
    with Inferencer(cfg.inference) as inf:
        for name, kw in frames:
            img = simulate(kw)
            ps = float(kw["pixel_size_A"])
            pr = inf.predict(img, ps)
            q = quantise(pr.p)
            probs = Probabilities(dequantise(q), pr.pixel_size_A, tuple(pr.frame_shape), pr.frame_pixel_size_A)
            chem, snr = analyze(img, probs, ps)
            out[f"{name}/image"] = img
            out[f"{name}/p_uint8"] = q
            out[f"{name}/grid"] = np.array([pr.pixel_size_A, ps])
            for k, v in outputs(chem, snr).items():
                out[f"{name}/{k}"] = v
            print(f"{name}: {len(chem.atoms)} atoms, {len(chem.bonds)} bonds, {len(chem.defects)} defects, "
                  f"SNR {snr:.2f}", file=sys.stderr)
    return out


def load(path: Path = REFERENCE_FILE) -> dict:
    """{name: {"image", "probs" (engine.types.Probabilities), "pixel_size_A", and the outputs}}."""
    from engine.types import Probabilities

    z = np.load(path)
    frames: dict = {}
    for key in z.files:
        name, field = key.split("/", 1)
        frames.setdefault(name, {})[field] = z[key]
    for f in frames.values():
        grid_A, ps = (float(v) for v in f.pop("grid"))
        f["pixel_size_A"] = ps
        f["probs"] = Probabilities(dequantise(f.pop("p_uint8")), grid_A, tuple(f["image"].shape), ps)
    return frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.chem.atoms_reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite tests/data/atoms_reference.npz")
    ap.add_argument("--bench", action="store_true",
                    help="the 512x512 bench-size frame instead (tests/data/atoms_reference_512.npz)")
    args = ap.parse_args(argv)
    data = build(BENCH_FRAMES if args.bench else FRAMES)
    if args.write:
        out = BENCH_FILE if args.bench else REFERENCE_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, **data)
        print(f"wrote {out} ({out.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
