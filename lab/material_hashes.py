"""Fingerprints of the material verdicts, to show that a change to engine/health/material*.py changes none.

Laboratory code (not imported by the runtime). Prints one line per verdict: the sha256 of its ``to_dict()``
(for the cadence, with ``carried_from_frame`` and ``check``, whose text has the guard's and the drift's
figures) and of its mask, so two source trees can be compared with ``cmp``:

* **cadence**: :class:`engine.health.material_cadence.MaterialCadence` (N = 20) frame by frame on simulated
  512^2 series (:func:`lab.material_bench.series_frames`): the 50-frame series of ``lab.material_bench``'s
  masked and whole-graphene benches, and 40-frame series of graphene beside a MoS2 flake at 0.1-0.3 A/px and of
  graphene (0.04-0.1 A/px, two switching to MoS2 / hBN halfway);
* **full**: :func:`engine.health.material.classify_material` on ``--per-kind`` frames of every kind of
  ``lab.material_eval`` (``draw``, seed ``--seed``, 0.03-0.3 A/px, 1e4-1e6 e/A^2; float32) with the pixel size
  declared and not, and the same frames as uint16 counts.

Run it with each tree first on ``PYTHONPATH`` (the file itself from either)::

    PYTHONPATH=/path/to/other/tree python lab/material_hashes.py --out /tmp/other.txt
    PYTHONPATH=. python lab/material_hashes.py --out /tmp/this.txt && cmp /tmp/other.txt /tmp/this.txt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np

#: (movie, A/px, seed, switch, imaging, frames)
SERIES = (("beside_MoS2", 0.15, 1, None, None, 50), ("graphene", 0.1, 1, None, None, 50),
          ("beside_MoS2", 0.1, 2, None, None, 40), ("beside_MoS2", 0.2, 3, None, "random", 40),
          ("beside_MoS2", 0.3, 4, None, None, 40), ("graphene", 0.04, 2, None, None, 40),
          ("graphene", 0.1, 3, "MoS2", None, 40), ("graphene", 0.07, 5, "hBN", "random", 40))


def _h(v) -> str:
    d = hashlib.sha256(json.dumps(v.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    m = hashlib.sha256(np.ascontiguousarray(v.mask).tobytes()).hexdigest()[:16] if v.mask is not None else "-"
    return f"{d} {m} {v.verdict}"


def cadence_lines():
    from engine.health.material_cadence import MaterialCadence
    from engine.health.monitor import FrameHealth
    from engine.pipeline import frame_material
    from lab.material_bench import series_frames

    for movie, px, seed, switch, imaging, n in SERIES:
        cad = MaterialCadence(20)
        for f in series_frames(n, 512, px, switch, seed, imaging, movie):
            v = cad.verdict(f, FrameHealth(), frame_material)
            yield f"cadence {movie} {px} {seed} {switch} {imaging} {n} {f.seq} {v.carried_over} {_h(v)}"


def full_lines(per_kind: int, seed: int):
    from engine.health.material import classify_material
    from lab.material_eval import EXTRA_GRAPHENE_KINDS, GRAPHENE_KINDS, OTHER_KINDS, draw

    rng = np.random.default_rng(seed)
    for kind in GRAPHENE_KINDS + OTHER_KINDS + EXTRA_GRAPHENE_KINDS:
        for i in range(per_kind):
            ex = draw(kind, rng, 512, (1e4, 1e6), (0.03, 0.3))
            img = np.asarray(ex.image, np.float32)
            counts = np.clip(np.rint(img * (50.0 if img.max() < 300 else 1.0)), 0, 65535).astype(np.uint16)
            for name, a in (("float32", img), ("uint16", counts)):
                for declared in (ex.pixel_size_A, None):
                    yield f"full {kind} {i} {name} {declared is not None} {_h(classify_material(a, declared))}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-kind", type=int, default=10)
    ap.add_argument("--seed", type=int, default=777)
    a = ap.parse_args(argv)
    import engine.health.material as m

    print(f"engine from {m.__file__}", file=sys.stderr)
    with open(a.out, "w") as fh:
        for line in cadence_lines():
            fh.write(line + "\n")
        for line in full_lines(a.per_kind, a.seed):
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
