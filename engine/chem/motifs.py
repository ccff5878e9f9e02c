"""Motif signatures and the motif library: naming local environments, discovering new ones.

Signature: a canonical 64-bit hash (16 hex digits) of a defect's neighbourhood graph: the defect's
members plus every atom within ``motif_radius_bonds`` bonds of them, with node labels (species,
coordination, the sizes of the rings around the atom, and whether it is a member) and the bonds
between them. The hash is Weisfeiler-Lehman refinement (radius + 1 rounds) with commutative
(sum of mixed values) multiset hashing, so it does not depend on atom order, position, rotation or
drift: the same local structure gives the same signature in every frame and every session.
Isomorphic neighbourhoods always agree; different ones collide with negligible probability for
the small graphs involved. All defects of a frame are hashed together with numpy (no per-atom
loop); only defect neighbourhoods are hashed, never the whole lattice.

Library: signatures of the defects the simulator is built around (see :mod:`engine.chem.reference`)
have built-in names; any other signature is a "new motif k" (k in order of first sight), counted,
with a few example positions kept; an operator can give a signature a name
(:meth:`MotifLibrary.name`), which :meth:`MotifLibrary.save` writes to JSON and the next session
loads.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = np.asarray(x).astype(np.uint64) + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def atom_ring_hash(n: int, face_of_corner: np.ndarray, atom_of_corner: np.ndarray, face_code: np.ndarray,
                   atoms: np.ndarray) -> np.ndarray:
    """(len(atoms),) uint64 multiset hash of the face codes around each of ``atoms``."""
    want = np.zeros(n, bool)
    want[atoms] = True
    sel = want[atom_of_corner]
    acc = np.zeros(n, np.uint64)
    np.add.at(acc, atom_of_corner[sel], mix64(face_code[face_of_corner[sel]].astype(np.uint64) * np.uint64(7919)))
    return acc[atoms]


def _expand(keys: np.ndarray, n: int, indptr: np.ndarray, indices: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of nodes ``keys = group * n + atom``: (neighbour keys, index of the source key)."""
    a = keys % n
    g = keys // n
    deg = indptr[a + 1] - indptr[a]
    rep = np.repeat(np.arange(len(keys)), deg)
    first = np.cumsum(deg) - deg
    pos = np.repeat(indptr[a] - first, deg) + np.arange(int(deg.sum()))
    return g[rep] * n + indices[pos], rep


def signatures(indptr: np.ndarray, indices: np.ndarray, species: np.ndarray, coord: np.ndarray, ring_code,
               cores: list[np.ndarray], radius: int) -> tuple[list[str], list[np.ndarray]]:
    """Signatures of several neighbourhoods at once.

    ``indptr``, ``indices``: the bond graph in CSR form; ``ring_code``: a function mapping an int
    array of atom indices to their (K,) uint64 ring hashes (called once, for the atoms of the
    neighbourhoods only); ``cores``: member index arrays. Returns the hex signatures and each
    neighbourhood's atom indices.
    """
    n = len(indptr) - 1
    d_count = len(cores)
    if d_count == 0:
        return [], []
    core_keys = np.unique(np.repeat(np.arange(d_count), [len(c) for c in cores]) * n
                          + np.concatenate(cores).astype(np.int64))
    keys = core_keys
    for _ in range(radius):
        nk, _src = _expand(keys, n, indptr, indices)
        keys = np.union1d(keys, nk)
    node_d = keys // n
    node_a = keys % n
    is_core = np.zeros(len(keys), bool)                 # (core_keys: sorted, unique, all among keys)
    is_core[np.searchsorted(keys, core_keys)] = True
    nk, src = _expand(keys, n, indptr, indices)
    p = np.minimum(np.searchsorted(keys, nk), len(keys) - 1)
    ok = keys[p] == nk
    src, dst = src[ok], p[ok]
    base = (species[node_a].astype(np.uint64) * np.uint64(64) + np.minimum(coord[node_a], 63).astype(np.uint64)
            + is_core.astype(np.uint64) * np.uint64(1 << 20))
    uniq, inv = np.unique(node_a, return_inverse=True)
    label = mix64(base ^ mix64(np.asarray(ring_code(uniq), np.uint64)[inv]))
    for _ in range(radius + 1):
        acc = np.zeros(len(keys), np.uint64)
        np.add.at(acc, src, mix64(label[dst]))
        label = mix64(label * np.uint64(31) + acc)
    total = np.zeros(d_count, np.uint64)
    np.add.at(total, node_d, mix64(label))
    total = mix64(total + np.bincount(node_d, minlength=d_count).astype(np.uint64))
    hoods = np.split(node_a, np.cumsum(np.bincount(node_d, minlength=d_count))[:-1])
    return [f"{int(t):016x}" for t in total], hoods


#: built-in names of the reference defects (kind in engine.chem.reference -> display name)
KNOWN_NAMES = {
    "Si-3fold": "Si1C3 (3-fold substitutional Si)",
    "Si-4fold": "Si1C4 (4-fold Si in a divacancy)",
    "Si-dimer": "Si2C4 (Si dimer)",
    "vacancy": "monovacancy",
    "divacancy": "divacancy",
    "5-8-5": "5-8-5 divacancy",
    "Stone-Wales": "Stone-Wales (55-77)",
}


def known_signatures(cfg) -> dict[str, str]:
    """Signatures of the reference defects under ``cfg``, mapped to their display names."""
    from engine.chem.chemistry import chemistry_from_positions
    from engine.chem.reference import single_defect

    out: dict[str, str] = {}
    for kind, name in KNOWN_NAMES.items():
        s = single_defect(kind, size_A=28.0)
        chem = chemistry_from_positions(s.xy_A, s.species, cfg)
        centre = np.array(s.labels[0]["centre_A"])
        best = None
        for d in chem.defects:
            dist = np.hypot(*(np.array(d.centre_px) * 1.0 - centre))
            if d.signature and (best is None or dist < best[0]):
                best = (dist, d.signature)
        if best is None or best[0] > 1.5:
            raise RuntimeError(f"reference defect {kind!r} was not recognised by the lattice graph")
        out[best[1]] = name
    return out


class MotifLibrary:
    """Names of local environments, known and discovered (see the module docstring).

    ``path``: JSON file with operator-given names and discovered motifs; loaded when it exists,
    written by :meth:`save`. ``cfg``: the :class:`ChemistryConfig` whose radius and cutoffs the
    built-in signatures are computed with (defaults when None).
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike | None = None, cfg=None, max_examples: int = 5):
        if cfg is None:
            from stemwatch.config import ChemistryConfig
            cfg = ChemistryConfig()
        self.path = Path(path) if path is not None else None
        self.radius = int(cfg.motif_radius_bonds)
        self.max_examples = int(max_examples)
        self.known: dict[str, str] = known_signatures(cfg)
        self.names: dict[str, str] = {}          # operator-given names
        self.new: dict[str, dict] = {}           # signature -> {"k", "count", "frames", "kind", "formula", "examples"}
        self.counts: dict[str, int] = {}         # observations per signature (known ones too)
        self._frame_calls = 0
        if self.path is not None and self.path.exists():
            self.load(self.path)

    # -- persistence ---------------------------------------------------------------------------
    def load(self, path: str | os.PathLike) -> None:
        """Read names and discovered motifs from ``path`` (JSON written by :meth:`save`)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read motif library {path}: {exc}") from exc
        if data.get("version") != self.VERSION:
            raise ValueError(f"motif library {path}: unsupported version {data.get('version')!r}")
        if int(data.get("radius", self.radius)) != self.radius:
            raise ValueError(f"motif library {path} was made with motif_radius_bonds={data.get('radius')}, "
                             f"not {self.radius}: signatures would not match")
        self.names.update({str(k): str(v) for k, v in data.get("names", {}).items()})
        for sig, rec in data.get("new", {}).items():
            self.new[str(sig)] = {"k": int(rec["k"]), "count": int(rec.get("count", 0)),
                                  "frames": int(rec.get("frames", 0)), "kind": rec.get("kind", ""),
                                  "formula": rec.get("formula", ""),
                                  "examples": [list(e) for e in rec.get("examples", [])]}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the library to ``path`` (default: the one given at construction), atomically."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("MotifLibrary.save needs a path (none was given at construction)")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": self.VERSION, "radius": self.radius, "names": self.names, "new": self.new}
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, target)
        return target

    # -- naming ----------------------------------------------------------------------------------
    def name(self, signature: str, name: str) -> None:
        """Give ``signature`` an operator name (used from now on; persisted by :meth:`save`)."""
        if not name or not str(name).strip():
            raise ValueError("a motif name must not be empty")
        self.names[str(signature)] = str(name).strip()

    def lookup(self, signature: str) -> str:
        """The name of a signature: operator name, built-in name, "new motif k", or "" if never seen."""
        if signature in self.names:
            return self.names[signature]
        if signature in self.known:
            return self.known[signature]
        if signature in self.new:
            return f"new motif {self.new[signature]['k']}"
        return ""

    def observe(self, defects: list, pixel_size_A: float = 1.0, frame: int | None = None) -> list[str]:
        """Name each defect of one frame (sets ``defect.motif``), count it, keep examples.

        Defects without a signature (regions, or cut by the frame edge) are named by their kind.
        Returns the signatures seen for the first time in this call.
        """
        self._frame_calls += 1
        first: list[str] = []
        seen_now: set[str] = set()
        for d in defects:
            sig = d.signature
            if not sig:
                d.motif = d.kind
                continue
            self.counts[sig] = self.counts.get(sig, 0) + 1
            if sig not in self.names and sig not in self.known:
                rec = self.new.get(sig)
                if rec is None:
                    rec = {"k": len(self.new) + 1, "count": 0, "frames": 0, "kind": d.kind,
                           "formula": d.formula, "examples": []}
                    self.new[sig] = rec
                    first.append(sig)
                rec["count"] += 1
                if sig not in seen_now:
                    rec["frames"] += 1
                if len(rec["examples"]) < self.max_examples:
                    x, y = d.centre_px
                    rec["examples"].append([round(x, 2), round(y, 2), round(x * pixel_size_A, 3),
                                            round(y * pixel_size_A, 3), -1 if frame is None else int(frame)])
            seen_now.add(sig)
            d.motif = self.lookup(sig)
        return first

    def new_motifs(self) -> list[dict]:
        """Discovered (unnamed) motifs, most frequent first: dicts with signature, name, count, examples."""
        out = [{"signature": s, "name": self.lookup(s), **r} for s, r in self.new.items() if s not in self.names]
        return sorted(out, key=lambda r: (-r["count"], r["k"]))
