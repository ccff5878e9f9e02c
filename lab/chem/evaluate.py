"""Accuracy of the chemistry stage against ground truth, and the real-data check.

Matching: a found atom matches a true one when they are mutual nearest neighbours within
``radius_A`` (0.5 A by default: well under half a C-C bond, so the match is unambiguous).

Metrics (:func:`atom_metrics`, :func:`defect_metrics`): detection precision / recall / F1,
localisation RMSE (A) over matched atoms, species accuracy, Si precision / recall, Si
coordination accuracy (bonds of each matched Si vs the truth), defect formula accuracy (each true
defect matched to the found defect whose centre is nearest, within 1.5 A) and vacancy recall.

Command line (prints a table; real frames are never written anywhere)::

    python -m lab.chem.evaluate realdata [--dir /work/shared/realdata] [--overlays /tmp/DIR]
    python -m lab.chem.evaluate simulated [--frames N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from lab.match import match_mutual
from lab.radii import ATOM_MATCH_RADIUS_A, DEFECT_MATCH_RADIUS_A
from lab.realdata import REALDATA, real_frames  # noqa: F401  (the one loader; re-exported)

@dataclass
class AtomMetrics:
    n_true: int
    n_found: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    rmse_A: float
    species_accuracy: float = float("nan")
    si_true: int = 0
    si_found: int = 0
    si_precision: float = float("nan")
    si_recall: float = float("nan")
    si_coordination_accuracy: float = float("nan")
    extra: dict = field(default_factory=dict)


def atom_metrics(found_xy_A: np.ndarray, true_xy_A: np.ndarray, radius_A: float = ATOM_MATCH_RADIUS_A,
                 found_species: np.ndarray | None = None, true_species: np.ndarray | None = None,
                 found_coord: np.ndarray | None = None, true_coord: np.ndarray | None = None,
                 true_mask: np.ndarray | None = None) -> AtomMetrics:
    """Detection / localisation / species / Si-coordination metrics (see the module docstring).

    ``true_mask``: only these true atoms count (e.g. away from the frame edge); found atoms that
    match an excluded true atom are not counted as false positives.
    """
    fi, ti = match_mutual(found_xy_A, true_xy_A, radius_A)
    keep_true = np.ones(len(true_xy_A), bool) if true_mask is None else np.asarray(true_mask, bool)
    counted = keep_true[ti]
    excluded_found = fi[~counted]
    fi, ti = fi[counted], ti[counted]
    n_true = int(keep_true.sum())
    n_found = len(found_xy_A) - len(excluded_found)
    if true_mask is not None and len(found_xy_A):
        # unmatched found atoms near excluded true atoms (the frame edge) are not false positives
        d, j = cKDTree(true_xy_A).query(found_xy_A)
        unmatched = np.ones(len(found_xy_A), bool)
        unmatched[np.r_[fi, excluded_found].astype(np.int64)] = False
        n_found -= int((unmatched & ~keep_true[j] & (d < 2 * radius_A)).sum())
    m = len(fi)
    prec = m / n_found if n_found else float("nan")
    rec = m / n_true if n_true else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if m else 0.0
    err = found_xy_A[fi] - true_xy_A[ti]
    out = AtomMetrics(n_true, n_found, m, prec, rec, f1, float(np.sqrt((err**2).sum(1).mean())) if m else float("nan"))
    if found_species is not None and true_species is not None:
        fs, ts = np.asarray(found_species)[fi], np.asarray(true_species)[ti]
        out.species_accuracy = float((fs == ts).mean()) if m else float("nan")
        si_t = np.asarray(true_species) == 1
        si_f = np.asarray(found_species) == 1
        out.si_true = int((si_t & keep_true).sum())
        out.si_found = int(si_f.sum()) - int(si_f[excluded_found].sum())
        tp = int(((fs == 1) & (ts == 1)).sum())
        out.si_precision = tp / out.si_found if out.si_found else float("nan")
        out.si_recall = tp / out.si_true if out.si_true else float("nan")
        if found_coord is not None and true_coord is not None:
            both = (fs == 1) & (ts == 1)
            if both.any():
                fc = np.asarray(found_coord)[fi][both]
                tc = np.asarray(true_coord)[ti][both]
                out.si_coordination_accuracy = float((fc == tc).mean())
                out.extra["si_coordination_pairs"] = [(int(a), int(b)) for a, b in zip(tc, fc)]
    return out


def defect_metrics(found: list, true: list, pixel_size_A: float, radius_A: float = DEFECT_MATCH_RADIUS_A) -> dict:
    """Formula accuracy and vacancy recall.

    ``found``: :class:`engine.types.Defect` list (centres in px); ``true``: dicts with ``formula``,
    ``kind`` and ``centre_A``. A true defect is matched to the nearest found one within
    ``radius_A`` (never reused).
    """
    fc = np.array([np.asarray(d.centre_px) * pixel_size_A for d in found]).reshape(-1, 2)
    used = np.zeros(len(found), bool)
    correct = 0
    vac_total = vac_found = 0
    rows = []
    for t in true:
        c = np.asarray(t["centre_A"], float)
        j = -1
        if len(fc):
            d = np.hypot(*(fc - c).T)
            d[used] = np.inf
            j = int(np.argmin(d))
            if d[j] > radius_A:
                j = -1
        got = found[j] if j >= 0 else None
        if j >= 0:
            used[j] = True
        ok = got is not None and got.formula == t["formula"]
        correct += ok
        is_vac = t["kind"] in ("vacancy", "divacancy", "5-8-5") or str(t["formula"]).startswith("V")
        if is_vac:
            vac_total += 1
            vac_found += got is not None and got.kind in ("vacancy", "divacancy", "5-8-5", "555-777", "hole")
        rows.append({"true": t["formula"], "found": got.formula if got else "", "kind": t["kind"]})
    return {"n_true": len(true), "formula_correct": correct,
            "formula_accuracy": correct / len(true) if true else float("nan"),
            "vacancies": vac_total, "vacancies_found": vac_found,
            "vacancy_recall": vac_found / vac_total if vac_total else float("nan"),
            "false_defects": int((~used).sum()), "rows": rows}


# ---------------------------------------------------------------------------------------------
# real data


def analyse_real(items: list[dict], cfg=None, overlays: Path | None = None, inferencer=None) -> list[dict]:
    """Run the pipeline (network -> atoms -> graph) on each real frame; compare with labels."""
    from engine.chem import analyze
    from stemwatch.config import ChemistryConfig

    cfg = cfg or ChemistryConfig()
    if inferencer is None:
        from engine.infer import Inferencer
        from stemwatch.config import InferenceConfig
        inferencer = Inferencer(InferenceConfig(backend="onnx"))
    rows = []
    for it in items:
        img, px = np.asarray(it["image"], np.float64), it["pixel_size_A"]
        probs = inferencer.predict(img, px)
        chem = analyze(probs, cfg, image=img)
        atoms = chem.atoms
        si = atoms.species == 1
        row = {"frame": it["name"], "shape": "x".join(map(str, img.shape)), "px_A": px,
               "atoms": len(atoms), "Si": int(si.sum()), "Si_at_border": int((si & atoms.border).sum()),
               "other": int((atoms.species == 2).sum()),
               "Si_coordination": sorted(int(c) for c in chem.coordination[si]),
               "defects": sorted(f"{d.kind}:{d.formula}" for d in chem.defects if d.kind != "edge"),
               "rings": chem.rings.counts()}
        if it.get("atoms_rc") is not None:
            true_xy = np.asarray(it["atoms_rc"], float)[:, ::-1] * px
            # labels come from the authors' network and skip the outermost atoms: judge both sets
            # inside a 2 A margin (pairs straddling the margin count as matched, not as errors)
            margin = 2.0
            H, W = img.shape

            def inside(xy):
                return ((xy > margin).all(1) & (xy[:, 0] < W * px - margin) & (xy[:, 1] < H * px - margin))

            t_in, f_in = inside(true_xy), inside(atoms.xy_A)
            fi, ti = match_mutual(atoms.xy_A, true_xy, ATOM_MATCH_RADIUS_A)
            pair_in = t_in[ti] | f_in[fi]
            fi, ti = fi[pair_in], ti[pair_in]
            n_true = int(t_in.sum() + (~t_in[ti]).sum())
            n_found = int(f_in.sum() + (~f_in[fi]).sum())
            err = atoms.xy_A[fi] - true_xy[ti]
            extra = f_in.copy()
            extra[fi] = False
            # unmatched found atoms: lattice atoms the (partial) labels skip? count those with 3 bonds
            # of normal length (1.2-1.7 A)
            b, bl = chem.bonds, chem.bond_length_A
            ok_len = np.bincount(b[(bl > 1.2) & (bl < 1.7)].ravel(), minlength=len(atoms))
            row.update({"labelled": n_true, "found_in": n_found, "matched": len(fi),
                        "precision": round(len(fi) / max(n_found, 1), 4),
                        "recall": round(len(fi) / max(n_true, 1), 4),
                        "rms_vs_labels_A": round(float(np.sqrt((err**2).sum(1).mean())), 3),
                        "unlabelled_found": int(extra.sum()), "of_which_3_bonds": int((extra & (ok_len == 3)).sum()),
                        # Si calls on atoms the labels hold (the lattice the authors resolved) vs elsewhere
                        "Si_on_labelled": int(si[fi].sum())})
        if it.get("si_rc") is not None:
            si_true = np.asarray(it["si_rc"], float).reshape(-1, 2)[:, ::-1] * px
            fi, ti = match_mutual(atoms.xy_A[si], si_true, ATOM_MATCH_RADIUS_A)
            row["Si_labelled"] = len(si_true)
            row["Si_matched"] = len(fi)
            idx = np.flatnonzero(si)[fi]
            row["Si_matched_coordination"] = [int(c) for c in chem.coordination[idx]]
        if overlays is not None:
            _overlay(img, chem, it, overlays / f"{it['name']}.png")
        rows.append(row)
    return rows


def _overlay(img: np.ndarray, chem, it: dict, path: Path, scale: int = 2) -> None:
    """Save an overlay PNG (for looking at, under /tmp only: never commit images of real data).

    Grey image; bonds blue; found C orange, Si red, other magenta circles; labels green crosses.
    """
    from PIL import Image, ImageDraw

    if not str(path.resolve()).startswith("/tmp/"):
        raise ValueError("overlays of real data go under /tmp only")
    path.parent.mkdir(parents=True, exist_ok=True)
    lo, hi = np.percentile(img, [1, 99.5])
    g = (np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(g).convert("RGB").resize((img.shape[1] * scale, img.shape[0] * scale))
    dr = ImageDraw.Draw(im)
    a = chem.atoms
    xy = (a.xy_px + 0.5) * scale
    for i, j in chem.bonds:
        dr.line([tuple(xy[i]), tuple(xy[j])], fill=(0, 170, 255), width=1)
    if it.get("atoms_rc") is not None:
        rc = (np.asarray(it["atoms_rc"], float) + 0.5) * scale
        for r, c in rc:
            dr.line([(c - 4, r), (c + 4, r)], fill=(0, 255, 0))
            dr.line([(c, r - 4), (c, r + 4)], fill=(0, 255, 0))
    colours = {0: (255, 150, 0), 1: (255, 0, 0), 2: (255, 0, 255)}
    rad = max(3, int(0.35 / a.pixel_size_A * scale))
    for (x, y), sp in zip(xy, a.species):
        dr.ellipse([x - rad, y - rad, x + rad, y + rad], outline=colours[int(sp)], width=2)
    for d in chem.defects:
        if d.kind != "edge":
            cx, cy = (np.asarray(d.centre_px) + 0.5) * scale
            dr.text((cx + 6, cy + 6), f"{d.kind} {d.formula}", fill=(255, 255, 0))
    im.save(path)


def _print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).rjust(widths[c]) for c in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.chem.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("realdata", help="network -> atoms -> graph on the real frames, vs their labels")
    r.add_argument("--dir", type=Path, default=REALDATA)
    r.add_argument("--overlays", type=Path, default=None, help="folder under /tmp for overlay PNGs")
    r.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    s = sub.add_parser("simulated", help="held-out simulated frames: the criterion-5 table")
    s.add_argument("--seed", type=int, default=None, help="default: the held-out seed of the tests")
    s.add_argument("--frames", type=int, default=None)
    s.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.what == "realdata":
        items = real_frames(args.dir)
        if not items:
            print(f"no real frames under {args.dir}", file=sys.stderr)
            return 1
        rows = analyse_real(items, overlays=args.overlays)
        _print_table(rows, ["frame", "shape", "px_A", "atoms", "Si", "Si_at_border", "other", "Si_coordination", "labelled",
                            "found_in", "matched", "precision", "recall", "rms_vs_labels_A", "unlabelled_found",
                            "of_which_3_bonds", "Si_labelled",
                            "Si_matched", "Si_matched_coordination"])
        for row in rows:
            print(f"  {row['frame']}: defects {row['defects']}  rings {row['rings']}")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, default=str))
        return 0
    from lab.chem.heldout import markdown_table, run_heldout
    table = run_heldout(seed=args.seed, n_frames=args.frames)
    print(markdown_table(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
