"""CSV / JSON export of one frame's atoms and chemistry.

``atoms_to_csv``: one row per atom, columns :data:`ATOM_COLUMNS` (x = column, y = row in the input
frame's pixels; ``x_A``, ``y_A`` the same in angstrom; species ``C`` / ``Si`` / ``other``).

``chemistry_to_json``: a JSON-ready dict ``{"pixel_size_A", "n_atoms", "atoms": {column: list},
"bonds": {"i", "j", "length_A"}, "rings": {"size": count}, "defects": [...]}``; each defect has
``kind, formula, motif, signature, members, centre_px, centre_A`` plus, for dopant groups, the
heavy-atom bond lengths (A) and bond angles (degrees) with ``distorted`` = std(angles) > 15 degrees
(the LibraryNet criterion). Written with :func:`write_json` (atomic).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from engine.chem.graph import bond_angles
from engine.types import C, SPECIES, Atoms, Chemistry

ATOM_COLUMNS = ("x", "y", "x_A", "y_A", "species", "confidence", "coordination", "border", "defect",
                "p_background", "p_C", "p_Si")


def atom_table(chem: Chemistry | Atoms) -> dict[str, np.ndarray]:
    """Per-atom columns (see :data:`ATOM_COLUMNS`) as arrays; coordination/defect -1 for bare Atoms."""
    atoms = chem.atoms if isinstance(chem, Chemistry) else chem
    n = len(atoms)
    coord = chem.coordination if isinstance(chem, Chemistry) else np.full(n, -1)
    adef = chem.atom_defect if isinstance(chem, Chemistry) and chem.atom_defect is not None else np.full(n, -1)
    xy_A = atoms.xy_A
    return {
        "x": atoms.xy_px[:, 0], "y": atoms.xy_px[:, 1], "x_A": xy_A[:, 0], "y_A": xy_A[:, 1],
        "species": np.array([SPECIES[int(s)] for s in atoms.species], dtype=object) if n else np.zeros(0, object),
        "confidence": atoms.confidence, "coordination": coord, "border": atoms.border.astype(int),
        "defect": adef, "p_background": atoms.class_prob[:, 0], "p_C": atoms.class_prob[:, 1],
        "p_Si": atoms.class_prob[:, 2],
    }


def atoms_to_csv(chem: Chemistry | Atoms, path: str | os.PathLike | None = None, frame: int | None = None) -> str:
    """Write (or return, when ``path`` is None) the atom table as CSV; optional leading ``frame`` column."""
    cols = atom_table(chem)
    names = (["frame"] if frame is not None else []) + list(ATOM_COLUMNS)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    fmt = {"x": "{:.3f}", "y": "{:.3f}", "x_A": "{:.4f}", "y_A": "{:.4f}", "confidence": "{:.4f}",
           "p_background": "{:.4f}", "p_C": "{:.4f}", "p_Si": "{:.4f}"}
    n = len(cols["x"])
    str_cols = [[fmt[c].format(v) for v in cols[c]] if c in fmt else [str(v) for v in cols[c]] for c in ATOM_COLUMNS]
    for k in range(n):
        w.writerow(([frame] if frame is not None else []) + [sc[k] for sc in str_cols])
    text = buf.getvalue()
    if path is not None:
        _atomic_write(Path(path), text)
    return text


def _defect_geometry(chem: Chemistry, members: np.ndarray) -> dict:
    """Bond lengths / angles around the heavy atoms among ``members``."""
    sp = chem.atoms.species
    heavy = members[sp[members] != C]
    if len(heavy) == 0:
        return {}
    b = chem.bonds
    on = np.isin(b[:, 0], heavy) | np.isin(b[:, 1], heavy)
    trip, ang = bond_angles(chem.atoms.xy_A, b, heavy)
    out = {"heavy_bond_lengths_A": [round(float(x), 3) for x in chem.bond_length_A[on]],
           "heavy_bond_angles_deg": [round(float(x), 1) for x in ang]}
    out["distorted"] = bool(len(ang) >= 2 and float(np.std(ang)) > 15.0)
    return out


def chemistry_to_json(chem: Chemistry, path: str | os.PathLike | None = None, frame: int | None = None) -> dict:
    """JSON-ready dict of one frame's chemistry (see the module docstring); written to ``path`` if given."""
    atoms = chem.atoms
    px = float(atoms.pixel_size_A)
    cols = atom_table(chem)
    atoms_json = {k: (v.tolist() if k != "species" else list(v)) for k, v in cols.items()}
    for k in ("x", "y", "x_A", "y_A", "confidence", "p_background", "p_C", "p_Si"):
        atoms_json[k] = [round(float(x), 4) for x in cols[k]]
    defects = []
    for d in chem.defects:
        rec = {"kind": d.kind, "formula": d.formula, "motif": d.motif, "signature": d.signature,
               "members": [int(m) for m in d.members],
               "centre_px": [round(float(d.centre_px[0]), 3), round(float(d.centre_px[1]), 3)],
               "centre_A": [round(float(d.centre_px[0]) * px, 4), round(float(d.centre_px[1]) * px, 4)]}
        rec.update(_defect_geometry(chem, np.asarray(d.members, np.int64)))
        defects.append(rec)
    ring_counts = chem.rings.counts() if hasattr(chem.rings, "counts") else {}
    out = {
        "frame": frame, "pixel_size_A": px, "n_atoms": len(atoms),
        "frame_shape": list(atoms.frame_shape) if atoms.frame_shape is not None else None,
        "atoms": atoms_json,
        "bonds": {"i": chem.bonds[:, 0].tolist(), "j": chem.bonds[:, 1].tolist(),
                  "length_A": [round(float(x), 4) for x in chem.bond_length_A]},
        "rings": {str(k): v for k, v in ring_counts.items()},
        "defects": defects,
    }
    if path is not None:
        write_json(out, path)
    return out


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temp file + rename)."""
    return _atomic_write(Path(path), json.dumps(obj, indent=1))


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
