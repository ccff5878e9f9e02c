"""``stemwatch bench chemistry``: atom finding + lattice graph + classification vs number of atoms.

Input: probability maps rendered (:mod:`lab.chem.synth`) from graphene fields with one defect
per ~200 atoms (3- and 4-fold Si, dimers, vacancies, divacancies, 5-8-5, Stone-Wales), on the
shipped model's grid (its ``pixel_size_A``; 0.2 A/px if no model is found), with noise and some
class confusion. Timed per frame: :func:`find_atoms`, :func:`build_chemistry` with a
:class:`MotifLibrary` (bonds, rings, defects, signatures, names). Reported: median and best of
several runs, microseconds per atom (flat when the cost grows linearly), and the target
"<= 5 ms at 2,000 atoms".
"""

from __future__ import annotations

import sys
import time

import numpy as np

KINDS = ["Si-3fold", "Si-4fold", "Si-dimer", "vacancy", "divacancy", "5-8-5", "Stone-Wales"]


def model_pixel_size_A() -> float:
    """The shipped model's grid pixel size (A), or 0.2 when no model is available."""
    try:
        from engine.infer.model import ModelContract
        return float(ModelContract.load().pixel_size_A)
    except Exception:                       # no model file yet, or unreadable: bench still runs
        return 0.2


def _frame(n_atoms: int, px: float, rng: np.random.Generator):
    from engine.chem.reference import defect_field
    from lab.chem.synth import render_probabilities

    side = float(np.sqrt(n_atoms * 2.62))
    n_def = max(1, n_atoms // 200)
    kinds = [KINDS[k % len(KINDS)] for k in range(n_def)]
    s = defect_field(side, side, kinds, rng, min_spacing_A=min(9.0, side / np.sqrt(n_def) * 0.7),
                     margin_A=4.0)
    shape = (int(np.ceil(side / px)), int(np.ceil(side / px)))
    probs = render_probabilities(s.xy_A, s.species, shape, px, sigma_A=0.3, saturate=1.5, confusion=0.1,
                                 noise=0.02, rng=rng)
    return s, probs


def _time(fn, reps: int) -> tuple[float, float]:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.min(ts))


def bench_chemistry(quick: bool = False):
    from engine.chem import MotifLibrary, build_chemistry, find_atoms
    from stemwatch.bench import BenchReport
    from stemwatch.config import ChemistryConfig

    cfg = ChemistryConfig()
    px = model_pixel_size_A()
    rng = np.random.default_rng(2017)
    sizes = [500, 2000, 5000, 20000] if quick else [500, 1000, 2000, 5000, 10000, 20000]
    reps_for = (lambda n: 5 if n <= 2000 else 3) if quick else (lambda n: 40 if n <= 2000 else 10)
    lib = MotifLibrary(cfg=cfg)
    rows = []
    for n in sizes:
        s, probs = _frame(n, px, rng)
        reps = reps_for(n)
        print(f"  chemistry: {len(s.species)} atoms, grid {probs.shape[1]}x{probs.shape[0]} px, {reps} runs",
              file=sys.stderr, flush=True)
        atoms = find_atoms(probs, cfg)
        chem = build_chemistry(atoms, cfg, lib)
        t_find, b_find = _time(lambda: find_atoms(probs, cfg), reps)
        t_graph, b_graph = _time(lambda: build_chemistry(atoms, cfg, lib), reps)
        t_all, b_all = _time(lambda: build_chemistry(find_atoms(probs, cfg), cfg, lib), reps)
        rows.append({
            "atoms": len(atoms), "grid_px": f"{probs.shape[1]}x{probs.shape[0]}",
            "find_ms": t_find * 1e3, "graph_ms": t_graph * 1e3, "total_ms": t_all * 1e3,
            "best_total_ms": b_all * 1e3, "us_per_atom": t_all * 1e6 / max(len(atoms), 1),
            "bonds": len(chem.bonds), "rings": len(chem.rings), "defects": len(chem.defects),
            "placed": len(s.labels),
        })
    at2k = next(r for r in rows if r["atoms"] >= 1900)
    per_atom = [r["us_per_atom"] for r in rows]
    growth = max(per_atom[1:]) / min(per_atom[1:]) if len(per_atom) > 2 else 1.0
    return BenchReport(
        name="chemistry",
        columns=["atoms", "grid_px", "find_ms", "graph_ms", "total_ms", "best_total_ms", "us_per_atom",
                 "bonds", "rings", "defects", "placed"],
        rows=rows,
        notes={"model_pixel_size_A": px,
               "what": "find_atoms + build_chemistry (bonds, rings, defects, signatures, motif names); "
                       "median of runs, one thread",
               "per-atom cost spread (max/min, >= 1,000 atoms)": round(growth, 2)},
        targets={"2,000 atoms <= 5 ms": f"{at2k['total_ms']:.2f} ms at {at2k['atoms']} atoms: "
                                        + ("PASS" if at2k["total_ms"] <= 5.0 else "FAIL"),
                 "linear to 20,000 atoms": f"us/atom {min(per_atom[1:]):.2f}-{max(per_atom[1:]):.2f}: "
                                           + ("PASS" if growth <= 1.5 else "CHECK")},
    )
