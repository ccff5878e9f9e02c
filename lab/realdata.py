"""The one loader of the real experimental frames, with their one pixel-size table.

The frames live outside the project (default ``/work/shared/realdata``, or ``$STEMWATCH_REALDATA``)
and have **no licence**: they are read in place, for evaluation only; nothing derived from them is
written into the project. :data:`FRAMES` lists every frame the folder's README describes: file,
key, pixel size (read from the graphene {10-10} spacing in each frame's FFT), raw detector offset
and the label arrays ((row, col) positions) where there are any.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REALDATA = Path(os.environ.get("STEMWATCH_REALDATA", "/work/shared/realdata"))
SI_FILE = "aicr_graphene_si_frames.npz"
GB_FILE = "aicr_graphene_grainboundary.npz"


@dataclass(frozen=True)
class RealFrame:
    """One entry of the table: where the frame is and what is known about it."""

    name: str
    file: str
    pixel_size_A: float
    offset: float = 0.0                  # raw detector offset (counts)
    atoms_key: str | None = None         # (N, 2) (row, col) of labelled atoms
    si_key: str | None = None            # (row, col) of the labelled Si


FRAMES = (
    RealFrame("G_Si_2nm", SI_FILE, 0.076, atoms_key="G_Si_2nm_atoms_rc", si_key="G_Si_2nm_si_rc"),
    RealFrame("G_dimSi", SI_FILE, 0.038),
    RealFrame("G_trimSi", SI_FILE, 0.038),
    RealFrame("G_Si_4fold", SI_FILE, 0.039, offset=2.6e5),
    RealFrame("G_GB_4nm", GB_FILE, 0.078, atoms_key="G_GB_4nm_atoms_rc"),
    RealFrame("G_GB_6nm", GB_FILE, 0.117, atoms_key="G_GB_6nm_atoms_rc"),
)

#: frame name -> pixel size (A/px)
PIXEL_SIZE_A = {f.name: f.pixel_size_A for f in FRAMES}


def real_frames(folder: str | Path = REALDATA, names=None) -> list[dict]:
    """The frames of :data:`FRAMES` present under ``folder`` (in table order; ``names`` selects some),
    each a dict: ``name``, ``image`` (the stored array, not converted), ``pixel_size_A``, ``offset``,
    ``atoms_rc`` and ``si_rc`` (None without labels). Missing files or keys are skipped."""
    folder = Path(folder)
    cache: dict[str, dict] = {}
    items = []
    for fr in FRAMES:
        if names is not None and fr.name not in names:
            continue
        path = folder / fr.file
        if not path.is_file():
            continue
        if fr.file not in cache:
            with np.load(path, allow_pickle=False) as z:
                cache[fr.file] = {k: z[k] for k in z.files}
        z = cache[fr.file]
        if f"{fr.name}_image" not in z:
            continue
        items.append({"name": fr.name, "image": z[f"{fr.name}_image"], "pixel_size_A": fr.pixel_size_A,
                      "offset": fr.offset,
                      "atoms_rc": z.get(fr.atoms_key) if fr.atoms_key else None,
                      "si_rc": z.get(fr.si_key) if fr.si_key else None})
    return items
