"""CPU per call of the vacuum check (:func:`engine.chem.vacuum.drop_in_vacuum`) on simulated 512x512 frames
at 0.1 A/px (1e4 and 1e5 e/A^2, with and without a hole; the network's atoms, shipped model), optionally
interleaved call by call with another version of the module in the same process (old vs new, same load).

    python -m lab.chem.vacuum_cost [--calls 40] [--against <(git show REV:engine/chem/vacuum.py)]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import types

import numpy as np


def _load(path: str) -> types.ModuleType:
    """A module from the source text at ``path`` (any file, e.g. an earlier revision of engine/chem/vacuum.py)."""
    mod = types.ModuleType("vacuum_against")
    with open(path) as fh:
        exec(compile(fh.read(), path, "exec"), mod.__dict__)
    return mod


def _call(mod, atoms, image, maps, cc):
    """``mod.drop_in_vacuum`` with the config's arguments it takes (earlier versions take fewer)."""
    import inspect

    names = list(inspect.signature(mod.drop_in_vacuum).parameters)[3:]
    args = {"min_dip": cc.vacuum_min_dip, "own_sigma": cc.vacuum_own_sigma,
            "dark_sigma": getattr(cc, "vacuum_dark_sigma", 0.0)}
    return mod.drop_in_vacuum(atoms, image, maps, *[args[n] for n in names])


def main(argv=None) -> int:
    from engine.chem import vacuum
    from engine.chem.atoms import contrast_maps, find_atoms
    from engine.infer import Inferencer
    from engine.sim import make_training_example
    from stemwatch.config import Config, InferenceConfig

    p = argparse.ArgumentParser(prog="python -m lab.chem.vacuum_cost", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=40, help="calls per frame and version (default 40)")
    p.add_argument("--against", help="another engine/chem/vacuum.py to time interleaved with this one")
    a = p.parse_args(argv)
    if a.calls < 1:
        print("--calls must be >= 1", file=sys.stderr)
        return 2
    versions = [("this", vacuum)]
    if a.against:
        try:
            versions.insert(0, ("against", _load(a.against)))
        except (OSError, SyntaxError) as exc:
            print(f"--against: cannot load {a.against}: {exc}", file=sys.stderr)
            return 2
    cc = Config().chemistry
    off = dataclasses.replace(cc, vacuum_min_dip=0.0)
    cases = []
    with Inferencer(InferenceConfig(backend="onnx")) as inf:
        for dose, holes, seed in ((1e4, True, 3), (1e5, True, 4), (1e5, False, 5), (1e4, False, 6)):
            ex = make_training_example(np.random.default_rng(seed), shape_px=(512, 512), pixel_size_A=0.1,
                                       dose_range=(dose, dose), si_per_nm2=0.5, holes=holes, contamination=False,
                                       adatoms=False)
            img = np.asarray(ex.image)
            maps = contrast_maps(img, 0.1)
            cases.append((f"{dose:.0e} e/A^2, {'a hole' if holes else 'no hole'}",
                           find_atoms(inf.predict(img, 0.1), off, img, maps), img, maps))
    print("| frame (512x512, 0.1 A/px) | atoms | " + " | ".join(f"{n}: ms CPU median (mean), kept" for n, _ in versions) + " |")
    print("|---|---|" + "---|" * len(versions))
    for name, atoms, img, maps in cases:
        t = {n: [] for n, _ in versions}
        for i in range(a.calls):
            for n, mod in (versions if i % 2 == 0 else versions[::-1]):       # alternate the order
                t0 = time.process_time()
                _call(mod, atoms, img, maps, cc)
                t[n].append(time.process_time() - t0)
        cells = [f"{1e3 * np.median(t[n]):.2f} ({1e3 * np.mean(t[n]):.2f}), {len(_call(mod, atoms, img, maps, cc))}"
                 for n, mod in versions]
        print(f"| {name} | {len(atoms)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
