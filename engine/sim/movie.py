"""Simulated STEM movies of Si-doped graphene with events at known frames and exact truth.

A movie is a fixed sample (a graphene sheet with dopants and static defects) whose *state* changes
at event frames, imaged frame after frame by :func:`engine.sim.imaging.render` while the field of
view drifts over it. The state is a map site -> atom id (which physical atom sits on each lattice
site, -1 for an empty site) plus a list of dopants; each frame's structure is rebuilt from the
pristine sheet with the functions of :mod:`engine.sim.structures`, so relaxations never accumulate
and every atom keeps its id (an ejected atom's id ends; an atom that arrives gets a new id).

Event model (``kind``: what changes; ``frame`` is the first frame showing the new state):

* ``si_3_to_4``  a 3-fold Si loses a neighbouring C (ejected) and moves into the divacancy centre;
* ``si_4_to_3``  a C arrives (new id) and fills one site of the divacancy; the Si takes the other;
* ``si_hop``     a 3-fold Si and one of its C neighbours exchange sites (bond inversion, 1.42 A);
* ``vacancy_created``  a lattice C far from any defect is ejected (its neighbours become 2-fold);
* ``dimer_formed`` / ``dimer_broken``  of two Si on meta sites (Si-C-Si, Si-Si ~2.8 A, not
  bonded), one hops onto the shared C site and bonds to the other (Si-Si 1.8 A), or back; each also
  gives an ``si_hop`` of the moving Si;
* ``rotor``      a Si3 cluster (a Si and two Si neighbours) turns by 120 degrees about its centre Si:
  the three neighbour sites' atoms move cyclically (two Si and one C, ~3.4 A each);
* ``flicker``    one Si is imaged dim (as Z = ``flicker_z``) for one frame; nothing else changes.

Example
-------
>>> from engine.sim.movie import MovieSpec, simulate_movie
>>> spec = MovieSpec(n_frames=3, shape_px=(64, 64), events=[(1, "si_3_to_4", 0)])
>>> [len(truth.events) for image, truth in simulate_movie(spec)]
[0, 1, 0]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from engine.sim import structures as st
from engine.sim.imaging import ImagingParams, apparent_positions, render
from engine.sim.truth import FrameTruth, GroundTruth

MOVIE_EVENT_KINDS = ("si_3_to_4", "si_4_to_3", "si_hop", "vacancy_created", "dimer_formed", "dimer_broken",
                     "rotor", "flicker")
DOPANT_KINDS = ("si3", "si4", "pair", "dimer", "cluster")
#: one-frame acquisition glitches (nothing changes in the sample): the beam current dips to
#: ``glitch_dose_fraction`` of the dose for one frame, or a scan tear shifts a band of rows sideways
GLITCH_KINDS = ("dose_dip", "scan_tear")
EXTRA_KINDS = ("vacancy", "585", "stone_wales", "adatom", "contamination", "hole")
PAIR_SI_SI_A = 2.8        # projected Si-Si across a Si-C-Si meta pair (not bonded; 2 x 1.77 x sin 60 = 3.07 flat)


def default_imaging(dose_e_per_A2: float = 1e5) -> ImagingParams:
    """Imaging of the bundled movies: a well-tuned aberration-corrected HAADF (see docs/simulator.md).

    Only fields that :class:`ImagingParams` has are set (scan-noise fields are named either
    ``row_jitter_px``/``flyback_*`` or ``row_jitter_A``/``line_glitch_*`` depending on its version).
    """
    want = dict(gamma=1.7, sigma_C_A2=0.02, probe_fwhm_A=0.95, astig_ratio=1.08, astig_angle_deg=30.0,
                tail_fraction=0.15, tail_fwhm_A=3.0, tail_shift_A=0.1, dose_e_per_A2=dose_e_per_A2,
                background_fraction=0.002, gradient_fraction=0.15, gradient_angle_deg=35.0,
                gain_counts_per_e=2.0, offset_counts=100.0, read_noise_counts=0.6,
                row_jitter_px=0.15, flyback_prob=0.002, flyback_shift_px=1.5,
                row_jitter_A=0.015, line_glitch_prob=0.002, line_glitch_A=0.15)
    names = {f.name for f in dataclasses.fields(ImagingParams)}
    return ImagingParams(**{k: v for k, v in want.items() if k in names})


@dataclass
class MovieSpec:
    """What to simulate (units in the names; ranges in docs/simulator.md).

    n_frames : frames (None: endless, for a live source). shape_px : (H, W). pixel_size_A : A/px.
    frame_time_s : s per frame (timestamps). imaging : ImagingParams, ``"random"`` (drawn over the
    full ranges from the seed) or None (:func:`default_imaging`); dose_e_per_A2 overrides its dose.
    drift_A_per_frame : mean field-of-view drift (dx, dy) in A per frame (the speed wanders but stays
    within max(1.5, |drift|) A/frame);
    drift_wander_A : std of the random change of the drift velocity per frame (A/frame);
    drift_bound_A : the field stays within this distance of its start (the drift reverses there);
    in_frame_drift : the sample also moves while a frame is scanned (slow scan distortion).
    thermal_jitter_A : std of each atom's independent displacement per frame.
    rotation_deg : lattice rotation (None: random). dopants : kinds of :data:`DOPANT_KINDS` placed at
    random sites (at least ``min_separation_A`` apart) visible in every frame; the first one at the
    centre when ``first_dopant_centre``. extras : static defects of :data:`EXTRA_KINDS`.
    events : scripted ``(frame, kind, dopant_index)`` (index None: any dopant that can; ignored for
    ``vacancy_created``). event_rate_per_frame : probability of a random event per frame (a kind
    and dopant drawn among those possible; a dopant rests ``min_event_gap_frames`` between events).
    output : ``"uint16"`` (rounded detector counts) or ``"float32"``. seed : everything is
    reproducible from it. event_cross_sections_barn : ``{kind: barn}`` for dopant event kinds: each
    frame, every dopant in view that can have one of them has an event with probability
    1 - exp(-sum(sigma) x dose) (dose = the frame's e/A^2, 1 barn = 1e-8 A^2), its kind drawn in
    proportion to sigma (no rest between events: a Poisson process in dose); the rates per dose are
    recorded in the truth's ``meta["rates_per_dose"]``. None (default): no such events. glitches : scripted ``(frame, kind)`` one-frame glitches of
    :data:`GLITCH_KINDS`; glitch_rate_per_frame : probability of a random one per frame (kinds
    alternate at random); glitch_dose_fraction : the dose of a ``dose_dip`` frame (0.3 = 30 %); a
    ``scan_tear`` shifts a band of 8-25 % of the rows by 2-3 px along x. The truth positions are the
    sample's (a glitch is an artefact of that frame); ``meta["glitches"]`` lists them.
    """

    n_frames: int | None = 60
    shape_px: tuple = (256, 256)
    pixel_size_A: float = 0.1
    frame_time_s: float = 0.2
    imaging: ImagingParams | str | None = None
    dose_e_per_A2: float | None = None
    drift_A_per_frame: tuple = (0.15, 0.08)
    drift_wander_A: float = 0.02
    drift_bound_A: float = 25.0
    in_frame_drift: bool = True
    thermal_jitter_A: float = 0.05
    rotation_deg: float | None = None
    dopants: tuple = ("si3",)
    first_dopant_centre: bool = True
    min_separation_A: float = 9.0
    extras: tuple = ()
    events: list | None = None
    event_rate_per_frame: float = 0.0
    min_event_gap_frames: int = 6
    flicker_z: int = 6
    output: str = "uint16"
    seed: int = 0
    event_cross_sections_barn: dict | None = None
    glitches: list | None = None
    glitch_rate_per_frame: float = 0.0
    glitch_dose_fraction: float = 0.3

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(self.imaging, ImagingParams):
            d["imaging"] = self.imaging.to_dict()
        d["events"] = [list(e) for e in self.events] if self.events else None
        return d


@dataclass
class _Dopant:
    kind: str                 # si3 [a] | si4 [a, b] | pair [a, d, b] | dimer [a, d, b] | cluster [c, n0, n1, n2]
    sites: list
    k: int = 0                # cluster: Si on ring[k], ring[k+1]
    last_event: int = -10 ** 9
    extra: dict = field(default_factory=dict)


class MovieSimulator:
    """Runs a :class:`MovieSpec`: :meth:`frames` yields ``(image, FrameTruth)``; :attr:`events`
    collects every event so far; :meth:`ground_truth` gathers frames kept with ``keep=True``."""

    def __init__(self, spec: MovieSpec):
        if spec.output not in ("uint16", "float32"):
            raise ValueError(f"output must be 'uint16' or 'float32', got {spec.output!r}")
        self.spec = spec
        ss = np.random.SeedSequence(int(spec.seed))
        r_scene, r_drift, r_event, r_noise, r_img = (np.random.default_rng(s) for s in ss.spawn(5))
        self._r_drift, self._r_event, self._r_noise = r_drift, r_event, r_noise
        self._r_rate = np.random.default_rng(ss.spawn(1)[0])   # a 6th stream: the other five are unchanged
        for k, v in (spec.event_cross_sections_barn or {}).items():
            if k not in MOVIE_EVENT_KINDS or k in ("vacancy_created", "flicker"):
                raise ValueError(f"event_cross_sections_barn: {k!r} is not a dopant event kind")
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"event_cross_sections_barn[{k!r}] must be >= 0 barn, got {v!r}")
        h, w = spec.shape_px
        ps = float(spec.pixel_size_A)
        self.fov_A = np.array([w * ps, h * ps])
        if spec.imaging == "random":
            self.imaging = ImagingParams.random(r_img)
        elif spec.imaging is None:
            self.imaging = default_imaging()
        elif isinstance(spec.imaging, ImagingParams):
            self.imaging = dataclasses.replace(spec.imaging)
        else:
            raise ValueError(f"imaging must be ImagingParams, 'random' or None, got {spec.imaging!r}")
        if spec.dose_e_per_A2 is not None:
            self.imaging.dose_e_per_A2 = float(spec.dose_e_per_A2)
        v = np.asarray(spec.drift_A_per_frame, float)
        n = spec.n_frames
        self.bound_A = float(spec.drift_bound_A if n is None else
                             min(spec.drift_bound_A, n * (np.abs(v).max() + 3 * spec.drift_wander_A * np.sqrt(n)) + 1.0))
        m = self.bound_A + 4.0
        self.origin0 = np.array([m, m])
        self._origin, self._vel = self.origin0.copy(), v.copy()
        self._origins: list = []
        if n is not None:                                   # the whole path, to place dopants in view
            self._origins = [self._next_origin() for _ in range(n)]
        rot = float(r_scene.uniform(0, 60)) if spec.rotation_deg is None else float(spec.rotation_deg)
        self.base = st.graphene(tuple(self.fov_A + 2 * m), rotation_deg=rot, rng=r_scene)
        self._place(r_scene)
        self.n_base = int(self.base.next_id)               # the sheet with its static extras (adatoms, contamination)
        self.occ = np.arange(self.base.next_id, dtype=np.int64)
        self.next_atom_id = int(self.base.next_id)
        self.vac_sites: list = []
        self.events: list = []
        self._scripted: dict = {}
        for ev in spec.events or []:
            f, kind = int(ev[0]), str(ev[1])
            if kind not in MOVIE_EVENT_KINDS:
                raise ValueError(f"unknown event kind {kind!r}; use one of {MOVIE_EVENT_KINDS}")
            self._scripted.setdefault(f, []).append((kind, None if len(ev) < 3 else ev[2]))
        self._glitch_rng = np.random.default_rng([int(spec.seed), 0x611C4])   # apart: glitches change nothing else
        self._glitch_scripted: dict = {}
        for g in spec.glitches or []:
            f, kind = int(g[0]), str(g[1])
            if kind not in GLITCH_KINDS:
                raise ValueError(f"unknown glitch kind {kind!r}; use one of {GLITCH_KINDS}")
            self._glitch_scripted[f] = kind
        self.glitch_log: list = []                          # [frame, kind] of every glitch made so far
        self._init_occupancy()
        self.sample = self._build()
        self.frames_kept: list = []

    # ------------------------------------------------------------------------------ drift
    def _next_origin(self) -> np.ndarray:
        """Origin (A) of the next frame: the field moves by the drift velocity, bounded."""
        o = self._origin.copy()
        self._vel = self._vel + self._r_drift.normal(0, self.spec.drift_wander_A, 2)
        # the wander must not run away: the speed stays within 1.5 A/frame, or the spec's own
        # speed when that is faster (a 2 A/frame spec drifts at 2 A/frame, not at 1.5)
        cap = max(1.5, float(np.hypot(*np.asarray(self.spec.drift_A_per_frame, float))))
        sp = np.hypot(*self._vel)
        if sp > cap:
            self._vel *= cap / sp
        nxt = self._origin + self._vel
        out = np.abs(nxt - self.origin0) > self.bound_A
        self._vel[out] *= -1
        self._origin = np.where(out, self._origin + self._vel, nxt)
        return o

    def origin_of(self, frame: int) -> np.ndarray:
        if self.spec.n_frames is not None:
            return self._origins[frame]
        while len(self._origins) <= frame:
            self._origins.append(self._next_origin())
            if len(self._origins) > 64:                     # endless: keep a short history
                self._origins[len(self._origins) - 65] = None
        return self._origins[frame]

    # ------------------------------------------------------------------------------ scene
    def _view_box(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) in sample A of the area visible in every frame (or the whole drift box)."""
        if self._origins:
            o = np.array(self._origins)
            lo, hi = o.max(0), o.min(0) + self.fov_A
            if np.all(hi - lo > 12.0):
                return lo, hi
            mid = o[len(o) // 2]
            return mid, mid + self.fov_A
        return self.origin0 - self.bound_A, self.origin0 + self.bound_A + self.fov_A

    def _free_site(self, rng, lo, hi, taken: list, sep: float, centre: bool = False) -> int | None:
        b = self.base
        m = min(5.0, 0.25 * float(np.min(hi - lo)))          # keep dopants off the field's edge
        for _ in range(200):
            p = (lo + hi) / 2 if centre else rng.uniform(lo + m, hi - m)
            centre = False
            if taken and np.hypot(*(np.array(taken) - p).T).min() < sep:
                continue
            try:
                sid = b.nearest(p)
            except ValueError:
                return None
            i = b.index(sid)[0]
            ok = b.label == 0
            d = np.hypot(*(b.xy_A - b.xy_A[i]).T)
            if np.any(~ok & (d < 6.0)) or np.any(~b.lattice & (d < 4.0)):
                continue
            return sid
        return None

    def _ring(self, site: int) -> list:
        """The 3 lattice neighbours of a base site, counter-clockwise."""
        nb = [int(x) for x in self.base.lattice_neighbours(site, 3)]
        p = self.base.xy_A[self.base.index(nb)] - self.base.xy_A[self.base.index(site)[0]]
        return [nb[i] for i in np.argsort(np.arctan2(p[:, 1], p[:, 0]))]

    def _place(self, rng) -> None:
        spec, b = self.spec, self.base
        lo, hi = self._view_box()
        taken: list = []
        self.dopants: list = []
        for kind in spec.dopants:
            if kind not in DOPANT_KINDS:
                raise ValueError(f"unknown dopant kind {kind!r}; use one of {DOPANT_KINDS}")
            sid = self._free_site(rng, lo, hi, taken, spec.min_separation_A,
                                  centre=spec.first_dopant_centre and not taken)
            if sid is None:
                raise ValueError(f"no room for dopant {len(taken) + 1} ({kind}) in the field: fewer dopants, "
                                 "a smaller min_separation_A or a larger frame")
            taken.append(b.xy_A[b.index(sid)[0]].copy())
            ring = self._ring(sid)
            if kind == "si3":
                d = _Dopant("si3", [sid])
            elif kind == "si4":
                d = _Dopant("si4", [sid, ring[int(rng.integers(3))]])
            elif kind in ("pair", "dimer"):
                bb = ring[int(rng.integers(3))]
                dd = [x for x in self._ring(bb) if x != sid][int(rng.integers(2))]
                d = _Dopant(kind, [sid, dd, bb])
            else:
                d = _Dopant("cluster", [sid] + ring, k=int(rng.integers(3)))
            self.dopants.append(d)
        self.extras_ids: list = []
        for kind in spec.extras:
            if kind not in EXTRA_KINDS:
                raise ValueError(f"unknown extra {kind!r}; use one of {EXTRA_KINDS}")
            sid = self._free_site(rng, lo, hi, taken, spec.min_separation_A)
            if sid is None:
                raise ValueError(f"no room for extra {kind!r} in the field")
            p = b.xy_A[b.index(sid)[0]].copy()
            taken.append(p)
            if kind in st.SITE_DEFECTS:
                st.SITE_DEFECTS[kind](b, sid)
            elif kind == "adatom":
                st.add_adatom(b, st.hollow_site(b, p), z=29)
            elif kind == "contamination":
                st.add_contamination(b, p, 4.0, rng, density_per_A2=0.2)
            else:
                st.add_hole(b, p, 3.5, rng)
        self.taken_A = taken

    def _init_occupancy(self) -> None:
        for d in self.dopants:
            if d.kind == "si4":
                self.occ[d.sites[1]] = -1                  # the divacancy's second site is empty
            if d.kind == "dimer":                           # Si on a and b (b between a and d)
                a, dd, bb = d.sites
                self.occ[dd], self.occ[bb] = self.occ[bb], self.occ[dd]

    # ------------------------------------------------------------------------------ structure
    def _build(self) -> st.Sample:
        """The current structure from the pristine sheet, the occupancy and the dopants' states."""
        s = self.base.copy()
        extra: dict = {}
        for site in self.vac_sites:
            st.add_vacancy(s, site)
        for d in self.dopants:
            if d.kind == "si3":
                st.add_si3(s, d.sites[0])
            elif d.kind == "si4":
                (new,) = st.add_si4(s, d.sites[0], d.sites[1])
                extra[int(new)] = int(self.occ[d.sites[0]])
            elif d.kind == "pair":
                a, dd, bb = d.sites
                st.add_si3(s, a)
                st.add_si3(s, dd)
                ia, idd, ib = s.index([a, dd, bb])
                mid = (s.xy_A[ia] + s.xy_A[idd]) / 2
                u = (s.xy_A[idd] - s.xy_A[ia]) / np.hypot(*(s.xy_A[idd] - s.xy_A[ia]))
                s.xy_A[ia], s.xy_A[idd] = mid - u * PAIR_SI_SI_A / 2, mid + u * PAIR_SI_SI_A / 2
                vb = s.xy_A[ib] - mid
                hgt = np.sqrt(st.SI_C_3FOLD_A ** 2 - (PAIR_SI_SI_A / 2) ** 2)
                s.xy_A[ib] = mid + vb / np.hypot(*vb) * hgt
                for si, other in ((a, dd), (dd, a)):          # second shell clear of the Si-C cutoff
                    st.clear_unbonded(s, si, [int(x) for x in s.lattice_neighbours(si, 3)] + [other], 2.45)
            elif d.kind == "dimer":
                a, dd, bb = d.sites
                st.add_dimer(s, a, partner_id=bb)
            else:
                ring = d.sites[1:]
                st.add_cluster(s, d.sites[0], 3, outer_ids=[ring[d.k], ring[(d.k + 1) % 3]])
        ids = s.ids
        base = ids < self.n_base
        new_ids = np.empty_like(ids)
        new_ids[base] = self.occ[ids[base]]
        for j in np.flatnonzero(~base):
            new_ids[j] = extra[int(ids[j])]
        if np.any(new_ids < 0):
            raise RuntimeError("internal: an atom sits on a site marked empty")
        remap = dict(zip(ids.tolist(), new_ids.tolist()))
        for dd in s.defects:
            dd["ids"] = [remap.get(i, i) for i in dd["ids"]]
        s.ids = new_ids
        return s

    def _site_xy(self, site: int) -> np.ndarray:
        return self.base.xy_A[self.base.index(site)[0]]

    def _atom_xy(self, atom_id: int) -> np.ndarray:
        return self.sample.xy_A[self.sample.index(atom_id)[0]].copy()

    # ------------------------------------------------------------------------------ events
    def _visible(self, xy_A, origin, margin=5.0) -> bool:
        rel = np.asarray(xy_A) - origin
        return bool(np.all(rel > margin) and np.all(rel < self.fov_A - margin))

    def _si_of(self, d: _Dopant) -> list:
        """Atom ids of a dopant's Si atoms."""
        o = self.occ
        if d.kind in ("si3", "si4"):
            return [int(o[d.sites[0]])]
        if d.kind == "pair":
            return [int(o[d.sites[0]]), int(o[d.sites[1]])]
        if d.kind == "dimer":
            return [int(o[d.sites[0]]), int(o[d.sites[2]])]
        ring = d.sites[1:]
        return [int(o[d.sites[0]]), int(o[ring[d.k]]), int(o[ring[(d.k + 1) % 3]])]

    def _clear_C(self, site: int, exclude: _Dopant | None = None, radius: float = 4.0) -> bool:
        """A lattice C site with no other dopant, vacancy or static defect within ``radius``."""
        if self.occ[site] < 0:
            return False
        p = self._site_xy(site)
        for d in self.dopants:
            if d is exclude:
                continue
            if np.hypot(*(np.array([self._site_xy(x) for x in d.sites]) - p).T).min() < radius:
                return False
        for v in self.vac_sites:
            if np.hypot(*(self._site_xy(v) - p)) < radius:
                return False
        lab = self.base.label != 0
        if np.any(lab) and np.hypot(*(self.base.xy_A[lab] - p).T).min() < radius:
            return False
        return True

    def _possible(self, kind: str, d: _Dopant) -> bool:
        need = {"si_3_to_4": ("si3",), "si_hop": ("si3",), "si_4_to_3": ("si4",), "dimer_formed": ("pair",),
                "dimer_broken": ("dimer",), "rotor": ("cluster",), "flicker": DOPANT_KINDS}[kind]
        if d.kind not in need:
            return False
        if kind in ("si_3_to_4", "si_hop"):
            return any(self._clear_C(x, d) for x in self._ring(d.sites[0]))
        return True

    def _apply(self, frame: int, kind: str, d: _Dopant | None, rng) -> list:
        """Change the state; returns event dicts (positions filled in by :meth:`_finish_events`)."""
        o = self.occ
        ev = []

        def add(k, atom, before, after, members, gone_xy=None, **kw):
            ev.append({"frame": frame, "atom_id": int(atom), "kind": k, "before": before, "after": after,
                       "members": [int(x) for x in members], "_gone_xy": gone_xy, **kw})

        if kind == "vacancy_created":
            origin = self.origin_of(frame)
            lat = np.flatnonzero(self.base.lattice & (self.base.label == 0) & (self.base.ids < self.n_base))
            for _ in range(300):
                site = int(self.base.ids[lat[rng.integers(len(lat))]])
                if self._visible(self._site_xy(site), origin, 6.0) and self._clear_C(site, None, 6.0):
                    break
            else:
                return []
            c = int(o[site])
            xy = self._atom_xy(c)
            o[site] = -1
            self.vac_sites.append(site)
            add("vacancy_created", c, "C", "vacancy", [c], gone_xy=xy)
            return ev
        d.last_event = frame
        if kind == "si_3_to_4":
            a = d.sites[0]
            si = int(o[a])
            cand = [x for x in self._ring(a) if self._clear_C(x, d)]
            bb = cand[int(rng.integers(len(cand)))]
            c = int(o[bb])
            o[bb] = -1
            d.kind, d.sites = "si4", [a, bb]
            add("si_3_to_4", si, "3-fold", "4-fold", [si, c], ejected=[c])
        elif kind == "si_4_to_3":
            a, bb = d.sites
            si = int(o[a])
            c = self.next_atom_id
            self.next_atom_id += 1
            if rng.uniform() < 0.5:
                a, bb = bb, a
            o[a], o[bb] = si, c
            d.kind, d.sites = "si3", [a]
            add("si_4_to_3", si, "4-fold", "3-fold", [si, c], arrived=[c])
        elif kind == "si_hop":
            a = d.sites[0]
            si = int(o[a])
            cand = [x for x in self._ring(a) if self._clear_C(x, d)]
            bb = cand[int(rng.integers(len(cand)))]
            c = int(o[bb])
            o[a], o[bb] = c, si
            d.sites = [bb]
            add("si_hop", si, a, bb, [si, c])
        elif kind in ("dimer_formed", "dimer_broken"):
            a, dd, bb = d.sites
            src, dst = (dd, bb) if kind == "dimer_formed" else (bb, dd)
            si, c, partner = int(o[src]), int(o[dst]), int(o[a])
            o[src], o[dst] = c, si
            d.kind = "dimer" if kind == "dimer_formed" else "pair"
            add(kind, si, "separate" if kind == "dimer_formed" else "dimer",
                "dimer" if kind == "dimer_formed" else "separate", [si, partner])
            add("si_hop", si, src, dst, [si, c])
        elif kind == "rotor":
            ring = d.sites[1:]
            old = [int(o[x]) for x in ring]
            for i in range(3):
                o[ring[(i + 1) % 3]] = old[i]
            centre = int(o[d.sites[0]])
            before = f"orientation {d.k * 120} deg"
            d.k = (d.k + 1) % 3
            add("rotor", centre, before, f"orientation {d.k * 120} deg", [centre] + old)
        elif kind == "flicker":
            sis = self._si_of(d)
            si = sis[int(rng.integers(len(sis)))]
            add("flicker", si, "Si", "Si", [si], dim=True)
        return ev

    def _events_for(self, frame: int) -> list:
        """Scripted and random events that take effect at ``frame``."""
        out = []
        rng = self._r_event
        origin = self.origin_of(frame)
        for kind, idx in self._scripted.get(frame, []):
            if kind == "vacancy_created":
                out += self._apply(frame, kind, None, rng)
                continue
            if idx is None:
                cands = [d for d in self.dopants if self._possible(kind, d)
                         and self._visible(self._site_xy(d.sites[0]), origin)]
                if not cands:
                    raise ValueError(f"frame {frame}: no dopant can have event {kind!r}")
                d = cands[int(rng.integers(len(cands)))]
            else:
                if not 0 <= int(idx) < len(self.dopants):
                    raise ValueError(f"frame {frame}: event {kind!r} names dopant {idx}, there are {len(self.dopants)}")
                d = self.dopants[int(idx)]
                if not self._possible(kind, d):
                    raise ValueError(f"frame {frame}: dopant {idx} is {d.kind!r} and cannot have event {kind!r}")
            out += self._apply(frame, kind, d, rng)
        if self.spec.event_rate_per_frame and rng.uniform() < self.spec.event_rate_per_frame:
            gap = self.spec.min_event_gap_frames
            kinds = [k for k in MOVIE_EVENT_KINDS]
            k = kinds[int(rng.integers(len(kinds)))]
            if k == "vacancy_created":
                if len(self.vac_sites) < 4:
                    out += self._apply(frame, k, None, rng)
            else:
                cands = [d for d in self.dopants if frame - d.last_event >= gap and self._possible(k, d)
                         and self._visible(self._site_xy(d.sites[0]), origin, 6.0)]
                if cands:
                    out += self._apply(frame, k, cands[int(rng.integers(len(cands)))], rng)
        if self.spec.event_cross_sections_barn:
            out += self._dose_events(frame, origin)
        return out

    def _dose_events(self, frame: int, origin) -> list:
        """Events drawn at the spec's cross-sections for this frame's dose (one per dopant at most)."""
        rng = self._r_rate
        dose = float(self.imaging.dose_e_per_A2)
        kinds = sorted(self.spec.event_cross_sections_barn.items())
        out = []
        for d in self.dopants:
            if not self._visible(self._site_xy(d.sites[0]), origin, 0.0):
                continue                                    # not scanned: no dose on this dopant
            sig = np.array([v * 1e-8 if self._possible(k, d) else 0.0 for k, v in kinds])
            total = float(sig.sum())
            if total <= 0 or rng.uniform() >= -np.expm1(-total * dose):
                continue
            k = kinds[int(rng.choice(len(kinds), p=sig / total))][0]
            out += self._apply(frame, k, d, rng)
        return out

    # ------------------------------------------------------------------------------ frames
    def _to_px(self, xy_A: np.ndarray, origin: np.ndarray, params: ImagingParams) -> np.ndarray:
        """Sample A -> where it appears in the frame (px), as render() maps it."""
        xy = (np.atleast_2d(xy_A) - origin) / self.spec.pixel_size_A
        return apparent_positions(xy, params, tuple(self.spec.shape_px), float(self.spec.pixel_size_A))

    def frames(self, keep: bool = False) -> Iterator[tuple[np.ndarray, FrameTruth]]:
        """Yield ``(image, FrameTruth)`` for every frame (forever when ``n_frames`` is None).

        image : (H, W) uint16 counts or float32 (``spec.output``). ``keep`` stores the truths for
        :meth:`ground_truth`.
        """
        spec = self.spec
        h, w = spec.shape_px
        ps = float(spec.pixel_size_A)
        f = 0
        while spec.n_frames is None or f < spec.n_frames:
            origin = self.origin_of(f)
            nxt = self.origin_of(f + 1) if (spec.n_frames is None or f + 1 < spec.n_frames) else None
            step = (nxt - origin) if nxt is not None else self._vel
            params = dataclasses.replace(self.imaging)
            glitch = self._glitch_for(f)
            if glitch == "dose_dip":
                params.dose_e_per_A2 = float(params.dose_e_per_A2) * float(spec.glitch_dose_fraction)
            if spec.in_frame_drift:
                params.drift_in_frame_A = (float(-step[0]), float(-step[1]))
            evs = self._events_for(f) if f > 0 else []
            if any(e["kind"] != "flicker" for e in evs):
                self.sample = self._build()
            s = self.sample
            # atoms near the field only (render pads by the probe tail)
            pad = 2.5 * params.tail_fwhm_A + 3.0 + np.abs(step).max()
            rel = s.xy_A - origin
            near = np.all(rel > -pad, 1) & np.all(rel < self.fov_A + pad, 1)
            cur = st.Sample(s.xy_A[near] + self._r_noise.normal(0, spec.thermal_jitter_A, (int(near.sum()), 2)),
                            s.species[near], s.z[near].copy(), s.ids[near], s.label[near], s.lattice[near])
            for e in evs:
                if e["kind"] == "flicker":
                    cur.z[cur.ids == e["atom_id"]] = spec.flicker_z
            img, xy_px = render(cur, params, (h, w), ps, self._r_noise, origin_A=tuple(origin))
            # coordination is the bonding state: counted on the structure before thermal jitter
            coord = st.coordination(st.Sample(s.xy_A[near], s.species[near], s.z[near], s.ids[near],
                                              s.label[near], s.lattice[near]))
            inside = (xy_px[:, 0] >= -0.5) & (xy_px[:, 0] < w - 0.5) & (xy_px[:, 1] >= -0.5) & (xy_px[:, 1] < h - 0.5)
            evs = self._finish_events(evs, cur, xy_px, origin, params)
            self.events += evs
            bright = (cur.z[inside] / s.z[near][inside].astype(float)) ** params.gamma
            truth = _make(FrameTruth, seq=f, xy_px=xy_px[inside], xy_A=xy_px[inside] * ps,
                          species=cur.species[inside].copy(), ids=cur.ids[inside].copy(), coordination=coord[inside],
                          label=cur.label[inside].copy(), lattice=cur.lattice[inside].copy(), z=s.z[near][inside].copy(),
                          intensity=bright.astype(np.float32), origin_A=np.asarray(origin, float).copy(),
                          t_s=f * spec.frame_time_s, events=evs)
            if keep:
                self.frames_kept.append(truth)
            if glitch == "scan_tear":
                img = self._tear(img)
            if spec.output == "uint16":
                img = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
            yield img, truth
            f += 1

    def _finish_events(self, evs: list, cur: st.Sample, xy_px: np.ndarray, origin, params) -> list:
        """Fill each event's position (px and A in its frame) and make hops' sites readable."""
        ps = self.spec.pixel_size_A
        out = []
        pos = dict(zip(cur.ids.tolist(), range(len(cur))))
        for e in evs:
            e = dict(e)
            gone = e.pop("_gone_xy", None)
            j = pos.get(e["atom_id"])
            xy = xy_px[j] if j is not None else self._to_px(gone, origin, params)[0]
            e["x"], e["y"] = float(xy[0]), float(xy[1])
            e["x_A"], e["y_A"] = float(xy[0] * ps), float(xy[1] * ps)
            if e["kind"] == "si_hop":
                a, b = (self._to_px(self._site_xy(x), origin, params)[0] for x in (e["before"], e["after"]))
                e["before"] = f"site ({a[0]:.1f}, {a[1]:.1f}) px"
                e["after"] = f"site ({b[0]:.1f}, {b[1]:.1f}) px"
            out.append(e)
        return out

    def _glitch_for(self, f: int) -> str:
        """The glitch of frame ``f`` ('' for none): scripted, else drawn at glitch_rate_per_frame."""
        kind = self._glitch_scripted.get(f, "")
        if not kind and self.spec.glitch_rate_per_frame > 0 and f > 0:
            if self._glitch_rng.random() < float(self.spec.glitch_rate_per_frame):
                kind = GLITCH_KINDS[int(self._glitch_rng.integers(len(GLITCH_KINDS)))]
        if kind:
            self.glitch_log.append([int(f), kind])
        return kind

    def _tear(self, img: np.ndarray) -> np.ndarray:
        """A scan tear: a band of 8-25 % of the rows shifted sideways by 2-3 px (edge pixels repeated)."""
        h, w = img.shape
        r = self._glitch_rng
        band = max(2, int(h * r.uniform(0.08, 0.25)))
        r0 = int(r.integers(0, max(1, h - band)))
        shift = int(r.choice([-3, -2, 2, 3]))
        return shift_rows(img, r0, band, shift)

    def meta(self) -> dict:
        """JSON-able description of the movie (what the truth file stores as ``meta``)."""
        spec = self.spec
        return json.loads(json.dumps({"pixel_size_A": float(spec.pixel_size_A), "shape_px": [int(x) for x in spec.shape_px],
                "frame_time_s": float(spec.frame_time_s), "imaging": self.imaging.to_dict(),
                "spec": spec.to_dict(), "labels": list(st.LABELS), "species": ["C", "Si", "other"],
                "dopants": [{"kind": d.kind, "sites": [int(x) for x in d.sites]} for d in self.dopants],
                "thermal_jitter_A": float(spec.thermal_jitter_A), "simulator": "engine.sim.movie v1",
                "glitches": [list(g) for g in self.glitch_log],
                **({"rates_per_dose": self.rates_per_dose()} if spec.event_cross_sections_barn else {})}))

    def rates_per_dose(self) -> dict:
        """The true rates of the dose-driven events: per kind, the cross-section (barn), the rate per
        e/A^2 (A^2) and per frame at this movie's dose."""
        dose = float(self.imaging.dose_e_per_A2)
        return {k: {"cross_section_barn": float(v), "rate_per_e_per_A2": float(v) * 1e-8,
                    "rate_per_frame": float(v) * 1e-8 * dose, "dose_e_per_A2_per_frame": dose}
                for k, v in sorted((self.spec.event_cross_sections_barn or {}).items())}

    def ground_truth(self) -> GroundTruth:
        """The truth of the frames produced so far with ``keep=True``."""
        m = self.meta()
        return _make(GroundTruth, pixel_size_A=m["pixel_size_A"], shape_px=tuple(m["shape_px"]),
                     frame_time_s=m["frame_time_s"], frames=list(self.frames_kept), events=list(self.events), meta=m)


def shift_rows(img: np.ndarray, r0: int, rows: int, shift: int) -> np.ndarray:
    """A copy of ``img`` with rows ``r0 .. r0 + rows - 1`` shifted ``shift`` px along x (a scan tear;
    the edge pixel is repeated into the gap)."""
    out = img.copy()
    band = out[r0:r0 + rows]
    if shift > 0:
        band[:, shift:] = img[r0:r0 + rows, :-shift]
        band[:, :shift] = img[r0:r0 + rows, :1]
    elif shift < 0:
        band[:, :shift] = img[r0:r0 + rows, -shift:]
        band[:, shift:] = img[r0:r0 + rows, -1:]
    return out


def _make(cls, **kw):
    """``cls(**kw)`` with only the fields ``cls`` has (truth classes may carry more or fewer fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kw.items() if k in names})


def simulate_movie(spec: MovieSpec) -> Iterator[tuple[np.ndarray, FrameTruth]]:
    """Yield ``(image, FrameTruth)`` per frame of ``spec`` (image uint16 counts or float32)."""
    yield from MovieSimulator(spec).frames()


def run_movie(spec: MovieSpec) -> tuple[np.ndarray, GroundTruth]:
    """The whole (finite) movie: (F, H, W) images and its :class:`GroundTruth`."""
    if spec.n_frames is None:
        raise ValueError("run_movie needs a finite n_frames")
    sim = MovieSimulator(spec)
    imgs = [img for img, _ in sim.frames(keep=True)]
    return np.stack(imgs), sim.ground_truth()


# ------------------------------------------------------------------------------ scenarios
SCENARIOS = ("switching", "field", "lowdose", "random")


def scenario(name: str, **overrides) -> MovieSpec:
    """The named movies (bundled in replay_data/, docs/simulator.md); keywords override fields.

    * ``switching`` - 256x256, one Si switching 3 <-> 4-fold every ~8 frames, a hop, a flicker;
    * ``field`` - 512x512, several Si (3- and 4-fold), a meta Si pair that forms and breaks a dimer,
      a rotating Si3 cluster, a C ejection, a hop, a flicker, 0.5 A/frame drift;
    * ``lowdose`` - 256x256 at 3e3 e/A^2, two Si, a 3->4 switch, a hop, a flicker;
    * ``random`` - 512x512, random dopants and random events (the live simulated microscope); the
      number of dopants scales with the field's area (8 at 512x512 px of 0.1 A, 2 at 256x256).
    """
    if name == "switching":
        n = overrides.pop("n_frames", 48)
        ev = [(8, "si_3_to_4", 0), (16, "si_4_to_3", 0), (24, "si_3_to_4", 0), (30, "flicker", 0),
              (34, "si_4_to_3", 0), (42, "si_hop", 0)]
        spec = MovieSpec(n_frames=n, shape_px=(256, 256), pixel_size_A=0.1, dopants=("si3",),
                         drift_A_per_frame=(0.12, -0.06), events=[e for e in ev if e[0] < n], seed=3)
    elif name == "field":
        n = overrides.pop("n_frames", 20)
        ev = [(3, "vacancy_created", None), (5, "dimer_formed", 4), (7, "rotor", 5), (9, "si_3_to_4", 0),
              (11, "si_hop", 1), (13, "dimer_broken", 4), (15, "rotor", 5), (16, "flicker", 2),
              (17, "si_4_to_3", 3)]
        spec = MovieSpec(n_frames=n, shape_px=(512, 512), pixel_size_A=0.1,
                         dopants=("si3", "si3", "si3", "si4", "pair", "cluster", "si3", "si4"),
                         first_dopant_centre=False, drift_A_per_frame=(0.45, 0.25), events=[e for e in ev if e[0] < n],
                         seed=11)
    elif name == "lowdose":
        n = overrides.pop("n_frames", 36)
        ev = [(10, "si_3_to_4", 0), (20, "flicker", 1), (26, "si_hop", 1)]
        spec = MovieSpec(n_frames=n, shape_px=(256, 256), pixel_size_A=0.1, dose_e_per_A2=3e3,
                         dopants=("si3", "si3"), drift_A_per_frame=(-0.1, 0.15), events=[e for e in ev if e[0] < n],
                         seed=5)
    elif name == "random":
        # as many dopants as the field holds: 8 on the 512 x 512 px, 0.1 A/px default (51 A square),
        # proportionally fewer on a smaller field (at least one), so every offered size works
        shape = overrides.get("shape_px", (512, 512))
        px = float(overrides.get("pixel_size_A", 0.1))
        area_A2 = float(shape[0]) * float(shape[-1]) * px * px
        all_dopants = ("si3", "si3", "si3", "si4", "si4", "pair", "cluster", "si3")
        n_dop = max(1, min(len(all_dopants), int(len(all_dopants) * area_A2 / (512 * 512 * 0.01))))
        spec = MovieSpec(n_frames=None, shape_px=(512, 512), pixel_size_A=0.1,
                         dopants=all_dopants[:n_dop],
                         first_dopant_centre=False, drift_A_per_frame=(0.2, 0.1), drift_bound_A=15.0,
                         event_rate_per_frame=0.15, seed=0)
    else:
        raise ValueError(f"unknown scenario {name!r}; use one of {SCENARIOS}")
    return dataclasses.replace(spec, **overrides)
