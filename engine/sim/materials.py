"""Samples that are *not* (only) graphene, imaged with the same model as graphene.

Operators move between samples; the analyzer must recognise a frame that is not graphene (issue
21). These functions build :class:`~engine.sim.structures.Sample` objects of other materials, all
rendered by :func:`engine.sim.imaging.render` (same probe, dose and Poisson noise, backgrounds and
scan distortions as graphene):

* 2H MoS2 / WS2 monolayers (:func:`tmd`): a honeycomb of metal columns (Mo Z = 42, W Z = 74) and S2
  columns (two S, Z = 16, on top of each other in projection) on the two sublattices, a = 3.16 /
  3.15 A; optional S vacancies (one or both S of a column) and dopants (metal or chalcogen sites);
* hBN (:func:`hbn`): B (Z = 5) and N (Z = 7) on the two sublattices, a = 2.50 A;
* amorphous carbon (:func:`amorphous_carbon`): a random network of C (hard-core distance ~1.3 A,
  projected density of 1-3 graphene layers) covering the field;
* vacuum (:func:`vacuum`): no atoms at all;
* polycrystalline graphene (:func:`graphene_grains`): two or more rotated grains meeting along
  boundaries (still graphene; a test case for the verdict);
* a field that is partly graphene (:func:`graphene_with_patch`): a region of another material
  (MoS2, amorphous carbon or vacuum) replaces the graphene.

Every atom that is not C or Si has species code ``OTHER``. Lengths in A.

Example
-------
>>> import numpy as np
>>> s = tmd((30.0, 30.0), "MoS2", rng=np.random.default_rng(0))
>>> sorted(set(s.z.tolist()))
[16, 42]
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from engine.sim import structures as st
from engine.sim.imaging import ImagingParams, render
from engine.sim.sample import TrainingExample, distort_lattice, random_sample
from engine.types import C, OTHER

#: Lattice constants (A), metal and chalcogen Z of the transition-metal dichalcogenides.
TMD = {"MoS2": (3.16, 42, 16), "WS2": (3.15, 74, 16)}
HBN_A = 2.50
#: Material names understood by :func:`material_sample` / :func:`material_example`.
MATERIALS = ("graphene", "MoS2", "WS2", "hBN", "amorphous", "vacuum", "graphene_grains", "graphene_patch",
             "graphene_hole")
#: What the verdict should say for each simulated material (engine.health.material).
EXPECTED_VERDICT = {"graphene": "graphene", "graphene_grains": "graphene", "graphene_patch": "graphene",
                    "MoS2": "not_graphene", "WS2": "not_graphene", "hBN": "not_graphene",
                    "graphene_hole": "graphene", "amorphous": "amorphous", "vacuum": "vacuum"}


def _empty() -> st.Sample:
    return st.Sample(np.zeros((0, 2)), np.zeros(0, np.int8), np.zeros(0, np.int16), np.zeros(0, np.int64),
                     np.zeros(0, np.int8), np.zeros(0, bool), [], 0)


def honeycomb(fov_A, a_A: float, rotation_deg: float = 0.0, rng: np.random.Generator | None = None,
              margin_A: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Sites of a honeycomb of lattice constant ``a_A`` over the field: (N, 2) positions, (N,) sublattice 0/1."""
    w, h = fov_A
    a1 = np.array([a_A, 0.0])
    a2 = np.array([a_A / 2, a_A * np.sqrt(3) / 2])
    basis = np.array([[0.0, 0.0], [a_A / 2, a_A / (2 * np.sqrt(3))]])
    half = 0.5 * np.hypot(w, h) + margin_A + 2 * a_A
    n = int(np.ceil(2 * half / (a_A * np.sqrt(3) / 2))) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = (cells[:, None, :] + basis[None]).reshape(-1, 2)
    sub = np.tile(np.array([0, 1]), len(cells))
    th = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    shift = rng.uniform(0, a_A, 2) if rng is not None else np.zeros(2)
    pts = (pts + shift) @ rot.T + np.array([w / 2, h / 2])
    keep = (pts[:, 0] > -margin_A) & (pts[:, 0] < w + margin_A) & (pts[:, 1] > -margin_A) & (pts[:, 1] < h + margin_A)
    return pts[keep], sub[keep]


def _sample(xy, z, species=OTHER) -> st.Sample:
    n = len(xy)
    sp = np.broadcast_to(np.asarray(species, np.int8), (n,)).copy()
    return st.Sample(np.asarray(xy, float).reshape(-1, 2), sp, np.broadcast_to(np.asarray(z, np.int16), (n,)).copy(),
                     np.arange(n, dtype=np.int64), np.zeros(n, np.int8), np.ones(n, bool), [], n)


def tmd(fov_A, material: str = "MoS2", rotation_deg: float | None = None, rng: np.random.Generator | None = None,
        margin_A: float = 3.0, s_vacancy_fraction: float = 0.0, dopant_fraction: float = 0.0,
        dopant_z: int | None = None) -> st.Sample:
    """A 2H MoS2 or WS2 monolayer seen along c: metal columns on one sublattice, S2 columns on the other.

    s_vacancy_fraction : fraction of S atoms removed (a column then holds one S, or none);
    dopant_fraction : fraction of metal sites substituted by ``dopant_z`` (default V, Z = 23, in
        MoS2 and Mo, Z = 42, in WS2); a tenth of that fraction of S is substituted by Se (Z = 34).
    """
    rng = rng if rng is not None else np.random.default_rng()
    a, zm, zs = TMD[material]
    rot = float(rng.uniform(0, 60)) if rotation_deg is None else rotation_deg
    pts, sub = honeycomb(fov_A, a, rot, rng, margin_A)
    metal = pts[sub == 0]
    chal = pts[sub == 1]
    zmetal = np.full(len(metal), zm, np.int16)
    if dopant_fraction:
        dz = dopant_z if dopant_z is not None else (23 if material == "MoS2" else 42)
        zmetal[rng.uniform(size=len(metal)) < dopant_fraction] = dz
    s_xy = np.vstack([chal, chal])                          # two S per column (top and bottom layer)
    zs_all = np.full(len(s_xy), zs, np.int16)
    if dopant_fraction:
        zs_all[rng.uniform(size=len(s_xy)) < 0.1 * dopant_fraction] = 34
    keep = rng.uniform(size=len(s_xy)) >= s_vacancy_fraction
    s = _sample(np.vstack([metal, s_xy[keep]]), np.concatenate([zmetal, zs_all[keep]]))
    s.defects.append({"kind": material, "a_A": a, "s_vacancies": int((~keep).sum()),
                      "dopants": int((zmetal != zm).sum())})
    return s


def hbn(fov_A, rotation_deg: float | None = None, rng: np.random.Generator | None = None,
        margin_A: float = 3.0) -> st.Sample:
    """Monolayer hexagonal boron nitride: B (Z = 5) and N (Z = 7) on the two sublattices, a = 2.50 A."""
    rng = rng if rng is not None else np.random.default_rng()
    rot = float(rng.uniform(0, 60)) if rotation_deg is None else rotation_deg
    pts, sub = honeycomb(fov_A, HBN_A, rot, rng, margin_A)
    s = _sample(pts, np.where(sub == 0, 5, 7))
    s.defects.append({"kind": "hBN", "a_A": HBN_A})
    return s


def _hard_core(xy: np.ndarray, d_min_A: float) -> np.ndarray:
    """Matern type-II thinning: keep a point unless an earlier-drawn point lies within ``d_min_A``."""
    pairs = cKDTree(xy).query_pairs(d_min_A, output_type="ndarray")
    if len(pairs) == 0:
        return xy
    return np.delete(xy, np.unique(pairs.max(axis=1)), axis=0)


def amorphous_carbon(fov_A, rng: np.random.Generator | None = None, layers: float | None = None,
                     margin_A: float = 3.0) -> st.Sample:
    """Amorphous carbon covering the field: ``layers`` (default U(0.7, 3)) graphene-equivalent
    layers of a random network, each made of two sheets of randomly placed C with a hard-core C-C
    distance of 1.3 A (Matern thinning, ~0.19 atoms/A^2 per sheet; graphene has 0.38), so that its
    Fourier transform shows diffuse rings and no spots; ~3 % O-like Z = 8 atoms."""
    rng = rng if rng is not None else np.random.default_rng()
    w, h = fov_A
    n_layers = float(rng.uniform(0.7, 3.0)) if layers is None else float(layers)
    parts = []
    area = (w + 2 * margin_A) * (h + 2 * margin_A)
    sheets = 2.0 * n_layers
    for k in range(int(np.ceil(sheets))):
        frac = min(1.0, sheets - k)
        n = rng.poisson(1.5 * area)                         # Matern II of 1.5 /A^2 at 1.3 A leaves ~0.19 /A^2
        xy = rng.uniform([-margin_A, -margin_A], [w + margin_A, h + margin_A], (n, 2))
        xy = _hard_core(xy, 1.3)
        parts.append(xy[rng.uniform(size=len(xy)) < frac])
    xy = np.vstack(parts) if parts else np.zeros((0, 2))
    z = np.where(rng.uniform(size=len(xy)) < 0.03, 8, 6)
    s = _sample(xy, z, species=C)
    s.lattice[:] = False
    s.label[:] = st.LABEL["contamination"]
    s.defects.append({"kind": "amorphous", "layers": n_layers})
    return s


def vacuum(fov_A=None, rng=None, margin_A: float = 3.0) -> st.Sample:
    """No sample in the beam (a hole much larger than the field, or the beam off the specimen)."""
    s = _empty()
    s.defects.append({"kind": "vacuum"})
    return s


def graphene_grains(fov_A, rng: np.random.Generator, n_grains: int | None = None, margin_A: float = 3.0) -> st.Sample:
    """Polycrystalline graphene: ``n_grains`` (default 2-3) rotated grains (Voronoi cells around random
    seeds); atoms of a grain closer than 1.2 A to an atom of a grain already placed are dropped, so
    the boundaries hold the pentagons/heptagons and gaps of real grain boundaries. Atoms are C,
    labelled ``lattice``."""
    w, h = fov_A
    k = int(rng.integers(2, 4)) if n_grains is None else int(n_grains)
    seeds = rng.uniform([0, 0], [w, h], (k, 2))
    angles = rng.uniform(0, 60, k)
    angles[1:] = angles[0] + np.sign(rng.uniform(-1, 1, k - 1)) * rng.uniform(8, 30, k - 1)
    placed = np.zeros((0, 2))
    for g in range(k):
        s = st.graphene(fov_A, rotation_deg=float(angles[g]), rng=rng, margin_A=margin_A)
        d = np.hypot(*(s.xy_A[:, None, :] - seeds[None]).transpose(2, 0, 1))
        mine = s.xy_A[np.argmin(d, axis=1) == g]
        if len(placed):
            dist, _ = cKDTree(placed).query(mine)
            mine = mine[dist > 1.2]
        placed = np.vstack([placed, mine])
    s = _sample(placed, 6, species=C)
    s.defects.append({"kind": "grain_boundary", "grains": k, "angles_deg": [float(x) for x in angles]})
    return s


def graphene_with_patch(fov_A, rng: np.random.Generator, other: str | None = None, fraction: float | None = None,
                        margin_A: float = 3.0) -> st.Sample:
    """Graphene over part of the field, another material (``other``: MoS2, amorphous or vacuum; default
    random) over the rest: the field is split by a straight edge at a random angle so that
    ``fraction`` (default U(0.15, 0.4)) of it is the other material. The graphene part keeps the
    random dopants/defects of :func:`engine.sim.sample.random_sample`."""
    w, h = fov_A
    other = other if other is not None else str(rng.choice(["MoS2", "amorphous", "vacuum"]))
    frac = float(rng.uniform(0.15, 0.4)) if fraction is None else float(fraction)
    g = random_sample(rng, fov_A, margin_A=margin_A, holes=False, contamination=False, adatoms=False)
    th = rng.uniform(0, 2 * np.pi)
    nrm = np.array([np.cos(th), np.sin(th)])
    c = np.array([w / 2, h / 2])
    # the edge sits where `frac` of a uniform grid over the field lies on the far side
    gy, gx = np.mgrid[0:h:64j, 0:w:64j]
    proj = (np.c_[gx.ravel(), gy.ravel()] - c) @ nrm
    cut = float(np.quantile(proj, 1.0 - frac))
    g.remove(g.ids[(g.xy_A - c) @ nrm > cut])
    if other != "vacuum":
        o = tmd(fov_A, other, rng=rng, margin_A=margin_A) if other in TMD else amorphous_carbon(fov_A, rng, margin_A=margin_A)
        keep = (o.xy_A - c) @ nrm > cut + 0.7
        ids = g.append(o.xy_A[keep], OTHER if other in TMD else C, 0, st.LABEL["contamination"], False)
        g.z[g.index(ids)] = o.z[keep]
    g.defects.append({"kind": "patch", "other": other, "fraction": frac, "normal": nrm.tolist(), "cut_A": cut,
                      "centre_A": c.tolist()})
    return g


def material_sample(material: str, fov_A, rng: np.random.Generator, margin_A: float = 3.0,
                    thermal_jitter_A: float = 0.05, **kw) -> st.Sample:
    """A random sample of ``material`` (one of :data:`MATERIALS`) over the field.

    ``graphene`` is :func:`engine.sim.sample.random_sample` (keywords passed on); ``graphene_hole`` the
    same with one large hole (radius 15-30 % of the field) and no other holes; TMDs get S vacancies
    (0-8 %) and dopants (0-5 %) at random; crystals get strain and ripples in 60 % of samples.
    """
    if material == "graphene":
        return random_sample(rng, fov_A, margin_A=margin_A, thermal_jitter_A=thermal_jitter_A, **kw)
    if material == "graphene_hole":
        s = random_sample(rng, fov_A, margin_A=margin_A, thermal_jitter_A=thermal_jitter_A, holes=False, **kw)
        st.add_hole(s, rng.uniform(0.3, 0.7, 2) * np.asarray(fov_A), float(rng.uniform(0.15, 0.3)) * min(fov_A), rng)
        return s
    if material in TMD:
        s = tmd(fov_A, material, rng=rng, margin_A=margin_A,
                s_vacancy_fraction=kw.get("s_vacancy_fraction", float(rng.uniform(0, 0.08))),
                dopant_fraction=kw.get("dopant_fraction", float(rng.uniform(0, 0.05))))
    elif material == "hBN":
        s = hbn(fov_A, rng=rng, margin_A=margin_A)
    elif material == "amorphous":
        s = amorphous_carbon(fov_A, rng, margin_A=margin_A)
    elif material == "vacuum":
        return vacuum(fov_A, rng, margin_A)
    elif material == "graphene_grains":
        s = graphene_grains(fov_A, rng, margin_A=margin_A)
    elif material == "graphene_patch":
        s = graphene_with_patch(fov_A, rng, other=kw.get("other"), fraction=kw.get("fraction"), margin_A=margin_A)
    else:
        raise ValueError(f"unknown material {material!r}; use one of {MATERIALS}")
    if material in ("MoS2", "WS2", "hBN", "graphene_grains") and rng.uniform() < 0.6:
        distort_lattice(s, rng, centre_A=(fov_A[0] / 2, fov_A[1] / 2))
    s.xy_A += rng.normal(0, thermal_jitter_A, s.xy_A.shape)
    return s


def material_example(rng: np.random.Generator, material: str, shape_px=(512, 512), pixel_size_A: float | None = None,
                     dose_range=(1e4, 1e6), params: ImagingParams | None = None, **kw) -> TrainingExample:
    """One frame of ``material`` over the simulator's full imaging ranges (as
    :func:`engine.sim.sample.make_training_example`); ``params["material"]`` names it.

    pixel_size_A : default log-uniform in [0.03, 0.3] A/px. Other keywords go to :func:`material_sample`.
    """
    if pixel_size_A is None:
        pixel_size_A = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
    h, w = shape_px
    fov = (w * pixel_size_A, h * pixel_size_A)
    ip = params if params is not None else ImagingParams.random(rng, dose_range)
    margin = max(3.0, 1.4 * ip.tail_fwhm_A if ip.tail_fraction > 0 else 3.0, 2.0 * ip.probe_fwhm_A)
    s = material_sample(material, fov, rng, margin_A=margin, **kw)
    image, xy = render(s, ip, shape_px, pixel_size_A, rng)
    m = 3.0 / pixel_size_A
    keep = (xy[:, 0] > -m) & (xy[:, 0] < w - 1 + m) & (xy[:, 1] > -m) & (xy[:, 1] < h - 1 + m) if len(xy) else np.zeros(0, bool)
    return TrainingExample(image, xy[keep], s.species[keep].copy(), s.lattice[keep].copy(), s.z[keep].copy(),
                           float(pixel_size_A), {"imaging": ip.to_dict(), "material": material,
                                                 "defects": [d["kind"] for d in s.defects],
                                                 "n_atoms": int(keep.sum())})


class MaterialMovie:
    """A movie of a static sample of another material (no events) with the movie's imaging and drift:
    the same interface as :class:`engine.sim.movie.MovieSimulator` for ``stemwatch simulate
    --material`` (``frames(keep)``, ``ground_truth()``, ``events``, ``imaging``).

    spec : a :class:`engine.sim.movie.MovieSpec` (shape, pixel size, frames, drift, dose, imaging,
    output, seed are used; dopants, extras and events are ignored); material : one of
    :data:`MATERIALS` other than the event-bearing ``graphene``; other keywords go to
    :func:`material_sample` (e.g. ``other="MoS2"`` for ``graphene_patch``: graphene beside a MoS2 flake);
    contamination_step_A : the RMS step (A, per axis) of a random walk that each contamination atom takes between
    one frame and the next (hydrocarbon contamination is mobile under the beam; the lattice and its dopants stay
    put). 0 (the default): a static sample, the frames exactly as before the option existed (its steps come from
    a stream of their own).
    """

    def __init__(self, spec, material: str, contamination_step_A: float = 0.0, **sample_kw):
        import dataclasses

        from engine.sim.movie import default_imaging

        if material not in MATERIALS or material == "graphene":
            raise ValueError(f"material must be one of {MATERIALS[1:]}, got {material!r}")
        self.spec, self.material = spec, material
        ss = np.random.SeedSequence(int(spec.seed))
        r_scene, self._r_noise, r_img = (np.random.default_rng(s) for s in ss.spawn(3))
        if spec.imaging == "random":
            self.imaging = ImagingParams.random(r_img)
        elif spec.imaging is None:
            self.imaging = default_imaging()
        else:
            self.imaging = dataclasses.replace(spec.imaging)
        if spec.dose_e_per_A2 is not None:
            self.imaging.dose_e_per_A2 = float(spec.dose_e_per_A2)
        h, w = spec.shape_px
        ps = float(spec.pixel_size_A)
        n = spec.n_frames if spec.n_frames is not None else 1000
        self._drift = np.asarray(spec.drift_A_per_frame, float)
        self.span_A = float(np.abs(self._drift).max() * n) if spec.n_frames is not None else 0.0
        reach = min(self.span_A, float(spec.drift_bound_A))
        self.sample = material_sample(material, (w * ps + 2 * reach + 8, h * ps + 2 * reach + 8), r_scene, margin_A=4.0,
                                      **sample_kw)
        if not (np.isfinite(contamination_step_A) and contamination_step_A >= 0):
            raise ValueError(f"contamination_step_A must be >= 0, got {contamination_step_A!r}")
        self.contamination_step_A = float(contamination_step_A)
        (self._r_walk,) = (np.random.default_rng(s) for s in ss.spawn(1))   # (after the three above: they stay)
        self.bound_A = reach
        self.events: list = []
        self.frames_kept: list = []

    def frames(self, keep: bool = False):
        from engine.sim.truth import FrameTruth

        spec = self.spec
        h, w = spec.shape_px
        ps = float(spec.pixel_size_A)
        base = np.array([self.bound_A + 4.0, self.bound_A + 4.0])
        walk = self.contamination_step_A > 0
        sample = self.sample.copy() if walk else self.sample        # (a walking contamination moves a copy of it)
        cont = sample.label == st.LABEL["contamination"] if walk else None
        f = 0
        while spec.n_frames is None or f < spec.n_frames:
            shift = self._drift * f
            if self.bound_A > 0:                 # bounce inside the sample (as the movie's drift bound)
                shift = self.bound_A - np.abs((shift + self.bound_A) % (4 * self.bound_A) - 2 * self.bound_A)
            elif spec.n_frames is None:
                shift = np.zeros(2)
            origin = base + shift
            if f > 0 and walk and cont.any():                 # one step of the contamination's random walk
                sample.xy_A[cont] += self._r_walk.normal(0.0, self.contamination_step_A, (int(cont.sum()), 2))
            img, xy = render(sample, self.imaging, (h, w), ps, self._r_noise, origin_A=tuple(origin))
            inside = ((xy[:, 0] >= -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < h - 0.5)
                      if len(xy) else np.zeros(0, bool))
            truth = FrameTruth(seq=f, xy_px=xy[inside], xy_A=xy[inside] * ps,
                               species=self.sample.species[inside].copy(), ids=self.sample.ids[inside].copy(),
                               coordination=np.zeros(int(inside.sum()), np.int16),
                               label=self.sample.label[inside].copy(), origin_A=origin.copy(), events=[])
            if keep:
                self.frames_kept.append(truth)
            if spec.output == "uint16":
                img = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
            yield img, truth
            f += 1

    def ground_truth(self):
        from engine.sim.truth import GroundTruth

        spec = self.spec
        return GroundTruth(frames=list(self.frames_kept), events=[],
                           meta={"pixel_size_A": float(spec.pixel_size_A), "shape_px": list(spec.shape_px),
                                 "frame_time_s": float(spec.frame_time_s), "imaging": self.imaging.to_dict(),
                                 "material": self.material, "labels": list(st.LABELS), "seed": int(spec.seed)})
