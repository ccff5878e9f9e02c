"""Ideal graphene with textbook defects: the chemistry module's own reference geometry.

Used to seed the known-motif names (:mod:`engine.chem.motifs`), by the benchmark and by the tests.
It is deliberately simple (no relaxation beyond moving a few neighbours): the topology is what
matters for signatures. Positions are ``(x, y)`` in angstrom; species codes follow
:data:`engine.types.SPECIES` (0 = C, 1 = Si, 2 = other).

Geometry (sources: graphene a = 2.46 A, C-C 1.42 A; Si-C bond lengths of Ziatdinov et al.
2017 / LibraryNet; see docs/chemistry.md):

* 3-fold substitutional Si: the 3 C neighbours pushed out radially to Si-C = 1.78 A;
* 4-fold Si in a divacancy: a bonded C pair removed, Si at its midpoint (Si-C = 1.88 A);
* monovacancy / divacancy: atoms removed (no reconstruction);
* 5-8-5: divacancy whose two pairs of dangling C close into pentagons (C-C = 1.55 A);
* Stone-Wales (55-77): a C-C bond rotated by 90 degrees about its midpoint;
* Si dimer: two bonded C replaced by Si, pushed apart to Si-Si = 1.95 A, their C at 1.70 A.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

CC_A = 1.42
A_LATTICE_A = CC_A * np.sqrt(3.0)


@dataclass
class Structure:
    """A flat list of atoms: ``xy_A`` (N, 2) float64, ``species`` (N,) int8, ``labels`` what was placed.

    ``labels`` is a list of dicts ``{"kind", "formula", "centre_A": (x, y)}``, one per defect placed.
    """

    xy_A: np.ndarray
    species: np.ndarray
    labels: list = field(default_factory=list)

    def copy(self) -> "Structure":
        return Structure(self.xy_A.copy(), self.species.copy(), [dict(d) for d in self.labels])

    def neighbours(self, i: int, r_A: float = 1.6) -> np.ndarray:
        """Indices of atoms within ``r_A`` of atom ``i`` (excluding ``i``)."""
        d = np.hypot(*(self.xy_A - self.xy_A[i]).T)
        return np.flatnonzero((d < r_A) & (d > 1e-6))

    def nearest(self, x_A: float, y_A: float) -> int:
        """Index of the atom nearest to ``(x_A, y_A)``."""
        return int(np.argmin(np.hypot(self.xy_A[:, 0] - x_A, self.xy_A[:, 1] - y_A)))

    def remove(self, idx) -> None:
        keep = np.ones(len(self.species), bool)
        keep[np.atleast_1d(idx)] = False
        self.xy_A = self.xy_A[keep]
        self.species = self.species[keep]


def graphene(width_A: float, height_A: float, rotation_deg: float = 0.0,
             origin_A: tuple[float, float] = (0.0, 0.0)) -> Structure:
    """Pristine graphene covering ``[0, width_A] x [0, height_A]`` (atoms outside are dropped).

    ``rotation_deg`` rotates the lattice about the box centre; ``origin_A`` shifts it.
    """
    a1 = np.array([A_LATTICE_A, 0.0])
    a2 = np.array([A_LATTICE_A / 2, A_LATTICE_A * np.sqrt(3) / 2])
    basis = np.array([[0.0, 0.0], [0.0, CC_A]])
    n = int(np.ceil(1.5 * max(width_A, height_A) / A_LATTICE_A)) + 4
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    xy = (cells[:, None, :] + basis[None]).reshape(-1, 2)
    th = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    centre = np.array([width_A / 2, height_A / 2])
    xy = xy @ rot.T + centre + np.asarray(origin_A)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width_A) & (xy[:, 1] >= 0) & (xy[:, 1] <= height_A)
    xy = xy[inside]
    return Structure(xy, np.zeros(len(xy), np.int8))


def _bonded_pair(s: Structure, i: int) -> tuple[int, int]:
    nb = s.neighbours(i)
    if len(nb) == 0:
        raise ValueError(f"atom {i} has no neighbour")
    return i, int(nb[0])


def add_si3(s: Structure, i: int, si_c_A: float = 1.78) -> None:
    """Replace C ``i`` by a 3-fold Si; its neighbours move out radially to ``si_c_A``."""
    nb = s.neighbours(i)
    s.species[i] = 1
    v = s.xy_A[nb] - s.xy_A[i]
    s.xy_A[nb] = s.xy_A[i] + v / np.linalg.norm(v, axis=1, keepdims=True) * si_c_A
    s.labels.append({"kind": "Si-3fold", "formula": "Si1C3", "centre_A": tuple(s.xy_A[i])})


def add_si4(s: Structure, i: int) -> None:
    """Remove the bonded pair (``i``, a neighbour) and put a 4-fold Si at its midpoint."""
    a, b = _bonded_pair(s, i)
    mid = (s.xy_A[a] + s.xy_A[b]) / 2
    s.xy_A[a] = mid
    s.species[a] = 1
    s.remove(b)
    s.labels.append({"kind": "Si-4fold", "formula": "Si1C4", "centre_A": tuple(mid)})


def add_vacancy(s: Structure, i: int) -> None:
    """Remove atom ``i`` (unreconstructed monovacancy)."""
    c = tuple(s.xy_A[i])
    s.remove(i)
    s.labels.append({"kind": "vacancy", "formula": "V1", "centre_A": c})


def add_divacancy(s: Structure, i: int) -> None:
    """Remove atom ``i`` and one neighbour (unreconstructed divacancy)."""
    a, b = _bonded_pair(s, i)
    c = tuple((s.xy_A[a] + s.xy_A[b]) / 2)
    s.remove([a, b])
    s.labels.append({"kind": "divacancy", "formula": "V2", "centre_A": c})


def add_585(s: Structure, i: int, closed_bond_A: float = 1.55) -> None:
    """Divacancy reconstructed into 5-8-5: each pair of dangling C closes into a pentagon."""
    a, b = _bonded_pair(s, i)
    pairs = []
    for x, other in ((a, b), (b, a)):
        nb = [k for k in s.neighbours(x) if k != other]
        pairs.append(nb)
    c = (s.xy_A[a] + s.xy_A[b]) / 2
    moves = {}
    for p, q in pairs:
        m = (s.xy_A[p] + s.xy_A[q]) / 2
        u = s.xy_A[q] - s.xy_A[p]
        u /= np.linalg.norm(u)
        moves[p] = m - u * closed_bond_A / 2 - s.xy_A[p]
        moves[q] = m + u * closed_bond_A / 2 - s.xy_A[q]
    # second shell follows half-way so the pentagons' other bonds stay near 1.42 A
    for k, v in list(moves.items()):
        for nb in s.neighbours(k):
            if nb not in moves and nb not in (a, b):
                s.xy_A[nb] += 0.5 * v
    for k, v in moves.items():
        s.xy_A[k] += v
    s.remove([a, b])
    s.labels.append({"kind": "5-8-5", "formula": "V2", "centre_A": tuple(c)})


def add_stone_wales(s: Structure, i: int) -> None:
    """Rotate the bond (``i``, a neighbour) by 90 degrees about its midpoint (55-77)."""
    a, b = _bonded_pair(s, i)
    m = (s.xy_A[a] + s.xy_A[b]) / 2
    for k in (a, b):
        v = s.xy_A[k] - m
        s.xy_A[k] = m + np.array([-v[1], v[0]])
    s.labels.append({"kind": "Stone-Wales", "formula": "SW", "centre_A": tuple(m)})


def add_si_dimer(s: Structure, i: int, si_si_A: float = 1.95) -> None:
    """Replace the bonded pair (``i``, a neighbour) by two Si, ``si_si_A`` apart (projected)."""
    a, b = _bonded_pair(s, i)
    m = (s.xy_A[a] + s.xy_A[b]) / 2
    u = s.xy_A[b] - s.xy_A[a]
    u /= np.linalg.norm(u)
    nbs = {k: [q for q in s.neighbours(k) if q not in (a, b)] for k in (a, b)}
    s.xy_A[a] = m - u * si_si_A / 2
    s.xy_A[b] = m + u * si_si_A / 2
    s.species[[a, b]] = 1
    for k, nb in nbs.items():                     # C neighbours pushed out to Si-C = 1.78 A
        v = s.xy_A[nb] - s.xy_A[k]
        s.xy_A[nb] = s.xy_A[k] + v / np.linalg.norm(v, axis=1, keepdims=True) * 1.70
    s.labels.append({"kind": "Si-dimer", "formula": "Si2C4", "centre_A": tuple(m)})


def add_hole(s: Structure, x_A: float, y_A: float, radius_A: float) -> None:
    """Remove every atom within ``radius_A`` of ``(x_A, y_A)``, then dangling single atoms."""
    d = np.hypot(s.xy_A[:, 0] - x_A, s.xy_A[:, 1] - y_A)
    s.remove(np.flatnonzero(d < radius_A))
    # drop atoms left with a single neighbour (physically unstable chains)
    for _ in range(3):
        tree = cKDTree(s.xy_A)
        cnt = np.array([len(x) for x in tree.query_ball_point(s.xy_A, 1.7)]) - 1
        d = np.hypot(s.xy_A[:, 0] - x_A, s.xy_A[:, 1] - y_A)
        bad = np.flatnonzero((cnt <= 1) & (d < radius_A + 3.0))
        if len(bad) == 0:
            break
        s.remove(bad)
    s.labels.append({"kind": "hole", "formula": "", "centre_A": (x_A, y_A)})


DEFECT_BUILDERS = {
    "Si-3fold": add_si3,
    "Si-4fold": add_si4,
    "vacancy": add_vacancy,
    "divacancy": add_divacancy,
    "5-8-5": add_585,
    "Stone-Wales": add_stone_wales,
    "Si-dimer": add_si_dimer,
}


def single_defect(kind: str, size_A: float = 24.0, rotation_deg: float = 0.0) -> Structure:
    """A ``size_A`` square of graphene (lattice rotated by ``rotation_deg``) with one defect of
    ``kind`` at the atom nearest the centre."""
    s = graphene(size_A, size_A, rotation_deg=rotation_deg)
    if kind != "pristine":
        DEFECT_BUILDERS[kind](s, s.nearest(size_A / 2, size_A / 2))
    return s


def defect_field(width_A: float, height_A: float, kinds: list[str], rng: np.random.Generator,
                 min_spacing_A: float = 9.0, margin_A: float = 5.0,
                 rotation_deg: float | None = None) -> Structure:
    """Graphene with the given defects at random sites at least ``min_spacing_A`` apart."""
    rot = float(rng.uniform(0, 60)) if rotation_deg is None else rotation_deg
    s = graphene(width_A, height_A, rotation_deg=rot)
    placed: list[np.ndarray] = []
    for kind in kinds:
        for _ in range(200):
            p = rng.uniform([margin_A, margin_A], [width_A - margin_A, height_A - margin_A])
            if all(np.hypot(*(p - q)) >= min_spacing_A for q in placed):
                break
        else:
            raise ValueError(f"could not place {len(kinds)} defects {min_spacing_A} A apart")
        placed.append(p)
        DEFECT_BUILDERS[kind](s, s.nearest(*p))
    return s
