"""INT8 against FP32 on the held-out table and on the real frames (issue 20, criterion 1).

:func:`compare_table` scores every dose x pixel-size cell of the held-out table (:mod:`lab.infer.heldout`:
same seed, same frames, same scorer) with the FP32 model and its INT8 variant on the ONNX Runtime CPU
backend, frame by frame from one generation of each frame, and reports both and the differences of
detection F1 and Si precision / recall. :func:`compare_real` compares the Si coordination the whole
analyzer (:class:`engine.pipeline.Pipeline`) finds on the real frames (``lab.realdata``) with each model.

``stemwatch eval-model --compare-int8`` prints the table.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from lab.infer.evaluate import Counts, find_atoms_simple, score_frame
from lab.infer.heldout import DOSES, PIXEL_SIZES_A, cell_frames

#: criterion 1: allowed |INT8 - FP32| of F1, Si precision and Si recall in every cell
TOLERANCE = 0.002
KEYS = ("f1", "si_precision", "si_recall")


def _inferencers(model_path=None, threads=None):
    from engine.infer.inferencer import Inferencer
    from stemwatch.config import InferenceConfig

    mk = lambda p: Inferencer(InferenceConfig(backend="onnx", model_path=model_path, cpu_precision=p,  # noqa: E731
                                              threads=threads))
    f32 = mk("fp32")
    try:
        return f32, mk("int8")
    except BaseException:
        f32.close()
        raise


def compare_table(frames_per_cell: int = 6, doses=DOSES, pixel_sizes=PIXEL_SIZES_A, model_path=None,
                  progress: bool = False) -> dict:
    """Plain held-out cells ``doses x pixel_sizes``, FP32 and INT8 on the same frames.

    Returns ``{"rows": [{"dose", "pixel_size_A", "fp32": summary, "int8": summary, "delta": {k: int8-fp32},
    "prob_max_abs_diff"}], "worst": {k: max |delta|}, "within": bool, ...}``."""
    f32, i8 = _inferencers(model_path)
    rows = []
    t0 = time.time()
    try:
        for dose in doses:
            for px in pixel_sizes:
                c32, c8 = Counts(), Counts()
                pdiff = 0.0
                for image, xy, species, fpx, ignore_xy in cell_frames(dose, px, "plain", frames_per_cell):
                    for inf, c in ((f32, c32), (i8, c8)):
                        probs = inf.predict(image, fpx)
                        pxy, psp = find_atoms_simple(probs)
                        c.add(score_frame(pxy, psp, xy, species, image.shape, fpx, ignore_xy_px=ignore_xy))
                        if inf is f32:
                            p32 = probs.p
                        else:
                            pdiff = max(pdiff, float(np.abs(probs.p - p32).max()))
                s32, s8 = c32.summary(), c8.summary()
                delta = {k: _diff(s8[k], s32[k]) for k in KEYS}
                rows.append({"dose": dose, "pixel_size_A": px, "fp32": s32, "int8": s8, "delta": delta,
                             "prob_max_abs_diff": pdiff})
                if progress:
                    print(f"dose {dose:.0e} px {px}: " + ", ".join(f"{k} {s32[k]:.4f} -> {s8[k]:.4f}" for k in KEYS),
                          file=sys.stderr, flush=True)
        desc = (f32.description, i8.description)
    finally:
        f32.close()
        i8.close()
    worst = {k: max(abs(r["delta"][k]) for r in rows) for k in KEYS}
    return {"rows": rows, "worst": worst, "within": all(v <= TOLERANCE for v in worst.values()),
            "tolerance": TOLERANCE, "frames_per_cell": frames_per_cell, "backends": desc,
            "seconds": round(time.time() - t0, 1)}


def _diff(a: float, b: float) -> float:
    """``a - b`` where both are numbers; 0 where both are undefined (no Si in the cell), else inf."""
    if a != a and b != b:
        return 0.0
    if a != a or b != b:
        return float("inf")
    return float(a - b)


def format_compare(table: dict) -> str:
    lines = [f"held-out plain cells, {table['frames_per_cell']} frames each; FP32 = {table['backends'][0]}, "
             f"INT8 = {table['backends'][1]}", "",
             "| dose (e/A^2) | pixel (A) | F1 fp32 | F1 int8 | Si P fp32 | Si P int8 | Si R fp32 | Si R int8 | "
             "max dF/dP/dR | max prob diff |", "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    for r in table["rows"]:
        a, b = r["fp32"], r["int8"]
        lines.append(f"| {r['dose']:.0e} | {r['pixel_size_A']} | {f(a['f1'])} | {f(b['f1'])} | {f(a['si_precision'])} | "
                     f"{f(b['si_precision'])} | {f(a['si_recall'])} | {f(b['si_recall'])} | "
                     f"{max(abs(v) for v in r['delta'].values()):.4f} | {r['prob_max_abs_diff']:.3f} |")
    w = table["worst"]
    lines += ["", "worst |INT8 - FP32|: " + ", ".join(f"{k} {v:.4f}" for k, v in w.items())
              + f" -> {'within' if table['within'] else 'OUTSIDE'} {table['tolerance']}"]
    return "\n".join(lines)


def compare_real(folder=None) -> list[dict]:
    """Per real frame (``lab.realdata``): the chemistry stage's Si count, sorted Si coordinations and
    labelled-Si coordinations (:func:`lab.chem.evaluate.analyse_real`) with FP32 and with INT8."""
    from lab.chem.evaluate import analyse_real
    from lab.realdata import REALDATA, real_frames

    items = real_frames(folder or REALDATA)
    f32, i8 = _inferencers()
    try:
        rows = {p: analyse_real(items, inferencer=inf) for p, inf in (("fp32", f32), ("int8", i8))}
    finally:
        f32.close()
        i8.close()
    keys = ("Si", "Si_coordination", "Si_matched_coordination", "atoms")
    out = []
    for a, b in zip(rows["fp32"], rows["int8"]):
        out.append({"frame": a["frame"], "fp32": {k: a.get(k) for k in keys}, "int8": {k: b.get(k) for k in keys},
                    "same_si": all(a.get(k) == b.get(k) for k in keys[:3])})
    return out
