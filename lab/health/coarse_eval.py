"""Detection accuracy against the model grid's sampling (laboratory code, issue 13 criterion 4).

A frame whose model grid would exceed ``HealthConfig.max_model_px`` is analysed on a coarser grid,
down to ``HealthConfig.coarsest_model_px_A``. This measures how far coarser the shipped network still
resolves the lattice: held-out frames of issue 4's ``plain`` cells (lab.infer.heldout.cell_frames) are
analysed at model samplings from the trained 0.2 A/px outwards, scored at network level as
lab.infer.heldout (detection F1, Si precision/recall)::

    PYTHONPATH=$PWD python -m lab.health.coarse_eval
"""

from __future__ import annotations

SAMPLINGS_A = (0.2, 0.22, 0.24, 0.26, 0.28, 0.3, 0.33, 0.36, 0.4)


def table(doses=(1e4, 1e5), pixel_size_A: float = 0.1, frames: int = 3, samplings=SAMPLINGS_A) -> list[dict]:
    from engine.infer import Inferencer
    from lab.infer.evaluate import Counts, find_atoms_simple, score_frame
    from lab.infer.heldout import cell_frames
    from stemwatch.config import InferenceConfig

    rows = []
    with Inferencer(InferenceConfig(backend="onnx")) as inf:
        for dose in doses:
            cells = list(cell_frames(dose, pixel_size_A, "plain", frames))
            for m in samplings:
                c = Counts()
                for image, xy, sp, px, ign in cells:
                    probs = inf.predict(image, px, model_pixel_size_A=m)
                    pxy, psp = find_atoms_simple(probs)
                    c.add(score_frame(pxy, psp, xy, sp, image.shape, px, ignore_xy_px=ign))
                rows.append({"dose": dose, "model_px_A": m, **c.summary()})
    return rows


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m lab.health.coarse_eval", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=3, help="held-out frames per dose")
    a = p.parse_args(argv)
    print("| dose e/A^2 | model px A | F1 | Si precision | Si recall |")
    print("|---|---|---|---|---|")
    for r in table(frames=a.frames):
        print(f"| {r['dose']:.0e} | {r['model_px_A']:.2f} | {r['f1']:.4f} | {r['si_precision']:.3f} | "
              f"{r['si_recall']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
