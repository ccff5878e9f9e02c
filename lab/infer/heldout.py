"""The held-out simulated test set and the model's accuracy table (criterion 7 of the inference issue).

Frames are regenerated deterministically from :data:`HELDOUT_SEED` (training draws every random
stream from ``SeedSequence([train_seed, k])`` with ``train_seed = 0``, ``k`` in 1..3, so this seed's
stream is never seen in training). Each table cell is ``frames`` frames of a 25.6 A x 25.6 A field
(about 250 atoms) at one dose and one frame pixel size; extra rows hold frames with the heavy
"other" species and with amorphous contamination. Scoring: :mod:`lab.infer.evaluate`.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from lab.infer.evaluate import Counts, find_atoms_simple, score_frame

HELDOUT_SEED = 90_417
FIELD_A = 25.6
DOSES = (1e3, 1e4, 1e5, 1e6)
PIXEL_SIZES_A = (0.05, 0.076, 0.1, 0.2)
#: Extra rows: name -> simulator overrides.
VARIANTS = ("plain", "heavy", "contamination", "holes")
#: Out-of-family images (``lab.sim.foreign``: other simulators' styles, never trained on).
FOREIGN_STYLES = ("gaussian_blobs", "zgamma_jitter", "airy")


#: Si site density of held-out frames (/nm^2): about 9 Si per 25.6 A frame, so Si precision and
#: recall rest on hundreds of Si per dose.
HELDOUT_SI_PER_NM2 = 1.0


def sim_overrides(dose: float, variant: str) -> dict:
    """Keyword overrides for ``engine.sim.make_training_example`` for one table cell.

    ``plain``: lattice defects, dopants and holes as drawn, no contamination, no adatoms;
    ``heavy``: plus 1-3 heavy adatoms (Fe/Cu/Mo/W/Au); ``contamination``: plus 1-2 amorphous patches;
    ``holes``: as ``plain`` but every frame has a hole (radius 3-10 A; :mod:`lab.infer.holes`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    over = {"dose_range": (dose, dose), "si_per_nm2": HELDOUT_SI_PER_NM2,
            "adatoms": variant == "heavy", "contamination": variant == "contamination"}
    if variant == "holes":
        over["holes"] = True
    return over


def cell_frames(dose: float, pixel_size_A: float, variant: str, frames: int, with_params: bool = False,
                seed: int = HELDOUT_SEED):
    """Yield ``(image, xy_px, species, pixel_size_A, ignore_xy_px)`` for one cell, deterministically
    (with ``with_params``, a sixth item: the simulator's parameter dict, ``{}`` for foreign styles).
    ``seed``: the held-out seed by default; another gives a development (or a fresh) set of the same cells.

    Contamination atoms are returned separately (``ignore_xy_px``): true and predicted atoms within
    1 A of them are not scored (amorphous patches hold no resolvable atoms)."""
    from engine.sim import make_training_example
    from engine.sim.sample import contamination_mask

    foreign = variant.startswith("foreign:")
    vidx = 10 + FOREIGN_STYLES.index(variant.split(":", 1)[1]) if foreign else VARIANTS.index(variant)
    key = [int(seed), int(round(np.log10(dose) * 10)) if dose > 0 else 0, int(round(pixel_size_A * 1000)), vidx]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    n = int(round(FIELD_A / pixel_size_A))
    for _ in range(frames):
        if foreign:
            from lab.sim.foreign import foreign_example

            ex = foreign_example(rng, variant.split(":", 1)[1], shape_px=(n, n), pixel_size_A=pixel_size_A,
                                 si_per_nm2=HELDOUT_SI_PER_NM2, adatoms=False, contamination=False)
        else:
            ex = make_training_example(rng, shape_px=(n, n), pixel_size_A=pixel_size_A, **sim_overrides(dose, variant))
        contam = contamination_mask(ex.species, getattr(ex, "lattice", None))
        xy, sp = np.asarray(ex.xy_px), np.asarray(ex.species)
        item = (np.asarray(ex.image), xy[~contam], sp[~contam], float(ex.pixel_size_A), xy[contam])
        yield item + ((getattr(ex, "params", None) or {},) if with_params else ())


def score_cell(inferencer, dose: float, pixel_size_A: float, variant: str, frames: int,
               seed: int = HELDOUT_SEED) -> Counts:
    total = Counts()
    for image, xy, species, px, ignore_xy in cell_frames(dose, pixel_size_A, variant, frames, seed=seed):
        probs = inferencer.predict(image, px)
        pxy, psp = find_atoms_simple(probs)
        total.add(score_frame(pxy, psp, xy, species, image.shape, px, ignore_xy_px=ignore_xy))
    return total


#: per-frame C-atom SNR bins of :func:`snr_breakdown` (``ImagingParams.atom_snr``)
SNR_BINS = (0.0, 2.0, 4.0, 8.0, float("inf"))


def snr_breakdown(inferencer, doses=(1e3, 1e4), pixel_sizes=PIXEL_SIZES_A, frames: int = 6) -> list[dict]:
    """The plain cells of ``doses`` x ``pixel_sizes`` again, pooled per dose and split by each frame's
    C-atom signal-to-noise ratio (:meth:`engine.sim.imaging.ImagingParams.atom_snr`): how accuracy
    depends on what the frame physically holds. Rows: ``{"dose", "snr_lo", "snr_hi", "frames", **Counts.summary()}``."""
    from engine.sim.imaging import ImagingParams

    rows = []
    for dose in doses:
        bins = [Counts() for _ in SNR_BINS[:-1]]
        nfr = [0] * len(bins)
        for px in pixel_sizes:
            for image, xy, species, fpx, ignore_xy, params in cell_frames(dose, px, "plain", frames, with_params=True):
                snr = ImagingParams.from_dict(params["imaging"]).atom_snr(fpx)
                k = int(np.searchsorted(SNR_BINS, snr, side="right")) - 1
                probs = inferencer.predict(image, fpx)
                pxy, psp = find_atoms_simple(probs)
                bins[k].add(score_frame(pxy, psp, xy, species, image.shape, fpx, ignore_xy_px=ignore_xy))
                nfr[k] += 1
        for k, c in enumerate(bins):
            if nfr[k]:
                rows.append({"dose": dose, "snr_lo": SNR_BINS[k], "snr_hi": SNR_BINS[k + 1], "frames": nfr[k],
                             **c.summary()})
    return rows


def format_snr_breakdown(rows: list[dict]) -> str:
    """Markdown table of :func:`snr_breakdown`."""
    lines = ["| dose (e/A^2) | C-atom SNR | frames | atoms | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        hi = "" if r["snr_hi"] == float("inf") else f"{r['snr_hi']:g}"
        lines.append(f"| {r['dose']:.0e} | {r['snr_lo']:g}-{hi} | {r['frames']} | {r['atoms']} | {r['precision']:.4f} | "
                     f"{r['recall']:.4f} | {r['f1']:.4f} |")
    return "\n".join(lines)


def accuracy_table(cfg=None, frames_per_cell: int = 6, quick: bool = False, progress: bool = False,
                   seed: int = HELDOUT_SEED) -> dict:
    """Score every cell (``seed``: the held-out seed by default; another gives development frames of the same
    cells). Returns ``{"rows": [...], "seed": ..., "backend": ...}``."""
    from engine.infer.inferencer import Inferencer

    rows = []
    cells = [(d, p, "plain") for d in DOSES for p in PIXEL_SIZES_A]
    cells += [(d, 0.1, v) for v in ("heavy", "contamination") for d in DOSES]   # holes: lab.infer.holes
    cells += [(0.0, px, f"foreign:{st}") for st in FOREIGN_STYLES for px in (0.05, 0.1)]
    if quick:
        cells = [c for c in cells if c[1] == 0.1]
    t0 = time.time()
    with Inferencer(cfg) as inf:
        for i, (dose, px, variant) in enumerate(cells):
            c = score_cell(inf, dose, px, variant, frames_per_cell, seed=seed)
            s = c.summary()
            rows.append({"dose": dose, "pixel_size_A": px, "variant": variant, **s})
            if progress:
                print(f"[{i + 1}/{len(cells)}] dose {dose:.0e} px {px} {variant}: F1 {s['f1']:.4f} "
                      f"Si P {s['si_precision']:.3f} R {s['si_recall']:.3f}", file=sys.stderr, flush=True)
        backend = inf.description
        model = inf.contract.path.name
    return {"rows": rows, "seed": seed, "frames_per_cell": frames_per_cell, "backend": backend,
            "model": model, "seconds": round(time.time() - t0, 1)}


def format_table(table: dict) -> str:
    """Markdown table of :func:`accuracy_table`'s result."""
    lines = [f"held-out seed {table['seed']}, {table['frames_per_cell']} frames of {FIELD_A} A per cell, "
             f"{table['backend']}, model {table['model']}", "",
             "| frames | dose (e/A^2) | pixel (A) | atoms | precision | recall | F1 | Si | Si P | Si R | heavy R | RMSE (A) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    for r in table["rows"]:
        dose = f"{r['dose']:.0e}" if r["dose"] > 0 else "(own)"
        lines.append(f"| {r['variant']} | {dose} | {r['pixel_size_A']} | {r['atoms']} | {fmt(r['precision'])} | "
                     f"{fmt(r['recall'])} | {fmt(r['f1'])} | {r['si']} | {fmt(r['si_precision'])} | "
                     f"{fmt(r['si_recall'])} | {fmt(r['heavy_recall'])} | {fmt(r['rmse_A'])} |")
    return "\n".join(lines)
