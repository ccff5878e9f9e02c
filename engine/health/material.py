"""Is this frame graphene? A material verdict from physical cues that rescaling cannot fake.

:func:`classify_material` looks at one frame (raw detector counts, any pixel size) and returns a
:class:`MaterialVerdict`: ``graphene``, ``not_graphene`` (a crystal that is not graphene: MoS2,
WS2, hBN, ...), ``amorphous`` (amorphous carbon or contamination over the field, no lattice) or
``vacuum`` (no sample). One windowed FFT of the frame gives every cue:

1. **Bragg spots.** The power spectrum divided by its own angular (log-)mean at each radius; a
   crystal has sharp spots far above that diffuse level. The strongest spot and its partners at
   +-60 / 120 degrees make a hexagonal lattice; their radius gives the {10-10} spacing d1 and the
   lattice constant a = 2 d1 / sqrt(3) (in px; in A when the pixel size is declared).
2. **Sublattice contrast from the bispectrum.** For three first-order reflections g1 + g2 + g3 = 0
   of a honeycomb with columns f_A, f_B on the two sublattices, the triple product
   F(g1) F(g2) F(g3) = (f_A w + f_B w*)^3 (w = exp(2 pi i / 3)) does not depend on where the lattice
   sits. Its phase is pi for equal sublattices (graphene) and goes to 0 for one sublattice
   (a triangular lattice); the dimmer/brighter column ratio follows exactly:
   rho = (1 - t) / (1 + t), t = |tan((pi - phase) / 3)| / sqrt(3). Graphene: rho = 1; hBN (Z 5 vs
   7): ~0.5; MoS2 (S2 vs Mo): ~0.4; WS2: ~0.15. Sums over 3x3 bins around each spot with
   k3 = -(k1 + k2) exactly, so the window's leakage phases cancel.
3. **Column width / lattice constant.** The second-order ({11-20}) over first-order amplitude,
   corrected for the structure factor of the measured contrast, gives the columns' Gaussian width
   in units of the spacing. The probe is fixed in A, so a lattice of another constant has columns of
   another relative width (reported, and a loose bound).
4. **Diffuse structure** (no spots): the angular log-mean power near the ky axis (|kx| small: the
   detector lag along x does not colour it there) against its level near Nyquist: amorphous matter
   gives a broad excess at atomic frequencies, vacuum only white noise.
5. **The declared pixel size**, when present, gives a in A: reported, and it decides borderline
   sublattice contrasts (a far from 2.46 A tips them to ``not_graphene``). It never overrules a clear
   image: a graphene frame with a wrong declared size is still graphene (issue 13 re-measures it).
6. **Resolved columns in real space** (fine sampling, a >= 36 px): a hexagon the Fourier cues reject, or
   the scale of a candidate spot when none passes, is tested on the column maxima themselves: sites
   with honeycomb neighbours, the two sublattices' median intensities over the hexagon centres
   (``material_realspace.site_contrast``; a few Si, a hole or a contamination patch cannot tip a
   median), or, where the columns merge into rings, the sites around the dark hexagon centres
   (``centre_contrast``). After a faint rejected hexagon (clutter) the scale is searched in real space
   (``real_space_scan``, 36-90 px). The other way round, a hexagon the Fourier cues call graphene
   at such sampling is overruled when its columns show clearly unequal sublattices
   (``real_space_veto``).
7. **Heavy adatoms**: a frame not called graphene is classified once more with the few isolated
   objects far brighter than the lattice replaced by the background (``material_blobs``), unless a
   strong crystal lattice was found: at fine sampling such an object is a disc whose transform fills
   graphene's first-order ring even when clipped.
8. **Fine sampling at exact frequencies** (``material_fine``): a frame still not called graphene is
   searched (with those objects replaced, where there are any) for a faint hexagon of a = 30-100 frame
   px in its *unwindowed* transform, evaluated by direct DFT at non-integer frequencies (a field of a
   few unit cells: the Hann window spreads and weakens its spots), each bin against its surroundings; graphene when the hexagon stands out and its bispectrum
   says equal sublattices, and the windowed spectrum showed no clear hexagon of another scale. Where the
   windowed spectrum saw nothing at all (``vacuum``) a fainter hexagon suffices (white noise is all it
   competes with); where it saw clutter (``amorphous``, ``not_graphene``) each half of the field is also
   searched alone (a contamination patch or a hole's edges over the other half).

Frames of at least 384 px a side are binned 2 x 2 first (one 256^2 FFT for a 512^2 frame; the bins
keep their frequencies in cycles per field, and graphene's {11-20} spots stay below the binned
Nyquist frequency up to 0.31 A/px); spot powers are corrected for the binning's transfer.

A graphene verdict also gives the region where the graphene lattice is (``mask``), only for a
field part of which clearly shows no lattice: the first-order spots of the lattice (and strong spots
of other grains on the same ring) demodulated on a coarse grid, their power over the noise expected
in each cell (3 x 3 cells averaged); cells at the noise level and far below the field's graphene
level, in groups, covering >= 6 % of the field, fall outside (the region is then grown by two
cells to keep its edge atoms). A whole graphene field gets ``mask`` None and fraction 1.

Cost: one 256^2 real FFT (512^2 frames) plus a few dozen small vectorised numpy calls
(``python -m lab.material_bench --against REF`` measures it against an older revision).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.chem.filters import block_sum
from engine.health.material_blobs import without_blobs
from engine.health.material_fine import (FINE_A_PX, FINE_PART_RHO, FINE_PART_SCORE, FINE_RHO_VACUUM, FINE_SCORE_SURE,
                                          FINE_SCORE_VACUUM,
                                          fine_accept, fine_hexagon, fine_hexagon_level,
                                          fine_hexagon_parts)
from engine.health.material_mask import graphene_mask
from engine.health.material_realspace import (RS_MIN_A_PX, real_space_candidates, real_space_rescue, real_space_scan,
                                              real_space_veto)
from engine.health.material_spectrum import (MIN_A_PX, O3, R_MAX, Spectrum, full_bins, on_lattice,
                                              sublattice_ratio)

VERDICTS = ("graphene", "not_graphene", "amorphous", "vacuum")
GRAPHENE_A = 2.46
BLOB_SKIP_STRENGTH = 32.0   # no second pass without bright objects after a hexagon this strong
PART_SKIP_STRENGTH = 100.0  # no search of the halves after a hexagon this strong (graphene rescued that way: <= 49)
#: the looser fine test of a frame called vacuum (FINE_SCORE_VACUUM) only on frames this large (px a side): its noise
#: level was measured on 512^2 frames; on a 256^2 vacuum frame at 0.1 A/px (tests/test_pipeline_material.py) a noise
#: hexagon of a = 59 px (4 unit cells across) passed it with a ratio of 0.88
VACUUM_RESCUE_MIN_SIDE_PX = 384

#: Decision thresholds (dimensionless; measured on held-out simulated frames, docs/simulator.md §6).
PEAK_MIN = 6.0             # hexagon score: geometric mean of the local contrasts of 3 spots at 0/60/120 deg
PEAK_SURE = 16.0           # (noise frames reach 8-13); between PEAK_MIN and PEAK_SURE the second-order
SECOND_MIN = 6.0           # spots must confirm the lattice (geometric mean of their contrasts)
SPOT_FAINT = 4.0           # the faintest of the three
SPOT_MIN = 15.0            # a spot's power over the median of its surroundings (noise: exceeds 15 in a
                           # 25-bin search window with p ~ 1e-3; a hexagon needs two more)
AGREE_MIN = 3              # candidates that must find the same hexagon when its second order does not show
AGREE_MIN_A_PX = 28.0      # ... and only for lattices at least this wide in frame px (graphene <= 0.088 A/px)
RADII_TOL = 0.12           # the three first-order spots' radii agree within this fraction
STEP_RATIO = 3e-3          # a lower-order spot is at least this fraction of the higher one (power)
RHO_ELEVEN = 0.10         # a hexagon with a sublattice ratio below this may be graphene's {11-20} spots
RHO_ELEVEN_FINE = 0.30    # ... below this where the first order they imply has resolved columns
RHO_GRAPHENE = 0.70        # sublattice ratio above this: equal sublattices (simulated hBN <= 0.61, MoS2 <= 0.5)
RHO_WEAK, STRENGTH_WEAK = 0.85, 10.0   # a lattice with spots this faint needs rho >= RHO_WEAK
RHO_BORDER = 0.90          # between RHO_GRAPHENE and this, a declared a like MoS2/WS2 (TMD_A) decides
A_TOLERANCE = 0.15         # relative difference to 2.46 A counted as "far" (calibration errors are smaller)
TMD_A = (3.0, 3.35)        # a (A) at the declared pixel size that looks like MoS2 / WS2 / WSe2
WIDTH_RANGE = (0.12, 0.90)  # column FWHM / a accepted for graphene (probe 0.7-1.3 A, blur, jitter, distortions)
SUBHARMONIC_WIDTH = 0.05   # a lattice stepped down to lower-order spots with columns narrower than this (FWHM / a)
                           # was a sub-harmonic of the lattice stepped down from (_lattice)
RICH_CELLS = 18.0           # a lattice with at least this many unit cells across the field's shorter side ...
RICH_STRENGTH = 12.0       # ... needs spots at least this strong (graphene there measured >= 15.9 on the development
                           # frames; noise hexagons at a = 8-26 px in fine-sampled amorphous and vacuum 5.3-10.7)
SECOND_TOP_K = 96         # ... scored among this many bins of largest Q (low-frequency clutter outranks faint spots)
HIGHER_TOL = 0.05          # second lattice: a within this of the first's a / sqrt 3, / 2, / sqrt 7, / 3 is its higher order
PROBE_RATIO = (0.5, 2.0)   # second lattice: its column FWHM (px) over the first lattice's, within these (_same_probe)
OWN_MIN_FRACTION = 0.1    # a second lattice must hold at least this fraction of the field (its mask) to be another crystal
SMEAR_REL = 0.20           # second lattice: candidates off the first lattice's rings (|k| not within this fraction
                           # of a reflection's |g|) are tried first
DIFFUSE_MIN = 0.6          # log power excess at atomic frequencies for amorphous matter



@dataclass
class MaterialVerdict:
    """What the frame shows. Plain data; ``to_dict`` drops the mask.

    verdict : one of :data:`VERDICTS`; reason : one human line.
    lattice_constant_px / lattice_constant_A : a of the strongest lattice (A only when the pixel size
        is known; NaN otherwise / without a lattice).
    symmetry : "hexagonal", "not hexagonal" or "none".
    sublattice_ratio : dimmer / brighter column intensity of the two sublattices (1 = equal; NaN).
    column_width_ratio : column FWHM / a (NaN).
    peak_strength : weakest of the three first-order spots over the diffuse level.
    diffuse_excess : log power excess at atomic frequencies over the noise floor (amorphous cue).
    graphene_fraction : fraction of the field inside ``mask`` (1 without a mask, 0 when not graphene).
    mask : (H, W) bool where the graphene lattice is, or None (whole frame / not computed).
    """

    verdict: str
    reason: str
    lattice_constant_px: float = float("nan")
    lattice_constant_A: float = float("nan")
    symmetry: str = "none"
    sublattice_ratio: float = float("nan")
    column_width_ratio: float = float("nan")
    peak_strength: float = 0.0
    diffuse_excess: float = 0.0
    graphene_fraction: float = 0.0
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_graphene(self) -> bool:
        return self.verdict == "graphene"

    def to_dict(self) -> dict:
        def num(v):
            return None if not np.isfinite(v) else round(float(v), 4)

        return {"verdict": self.verdict, "reason": self.reason,
                "lattice_constant_px": num(self.lattice_constant_px), "lattice_constant_A": num(self.lattice_constant_A),
                "symmetry": self.symmetry, "sublattice_ratio": num(self.sublattice_ratio),
                "column_width_ratio": num(self.column_width_ratio), "peak_strength": num(self.peak_strength),
                "diffuse_excess": num(self.diffuse_excess), "graphene_fraction": num(self.graphene_fraction)}


def _near_spots(a, b, S, rel: float = 0.12) -> bool:
    """Whether any first-order spot of lattice ``a`` lies within ``rel`` of |k| of a first-order spot
    (either sign) of lattice ``b``: a strained or bent part of the same crystal, not another one."""
    A = np.asarray(a, float) * S.scale
    B = np.asarray(b, float) * S.scale
    B = np.vstack([B, -B])
    d = np.hypot(*(A[:, None, :] - B[None, :, :]).transpose(2, 0, 1))
    return bool((d <= rel * np.hypot(*A.T)[:, None]).any())


#: Lower-order reflections of a hexagonal lattice relative to a spot k: (|g| factor, rotation in degrees):
#: {11-20} -> {10-10} (1/sqrt 3, +-30), {20-20} -> {10-10} (1/2, 0), {21-30} -> {10-10} (1/sqrt 7, +-19.1), 1/3.
_LOWER = ((1 / np.sqrt(3.0), 30.0), (1 / np.sqrt(3.0), -30.0), (0.5, 0.0), (1 / np.sqrt(7.0), 19.1066),
          (1 / np.sqrt(7.0), -19.1066), (1 / 3.0, 0.0))


def _rho(F: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> float:
    """Sublattice ratio from the bispectrum of the first-order spots k1, k2, k3 = -(k1 + k2), summed
    over 3x3 x 3x3 bins with k3 = -(k1 + k2) exactly (the window's leakage phases cancel)."""
    o = O3
    a1 = k1[None, :] + o
    a2 = k2[None, :] + o
    s12 = (a1[:, None, :] + a2[None, :, :]).reshape(-1, 2)
    f1 = full_bins(F, a1[:, 0], a1[:, 1])
    f2 = full_bins(F, a2[:, 0], a2[:, 1])
    f3 = full_bins(F, -s12[:, 0], -s12[:, 1]).reshape(len(o), len(o))
    return sublattice_ratio(complex((f1[:, None] * f2[None, :] * f3).sum()))


def _lattice(S: Spectrum, k1, q1, unconfirmed: list | None = None, step: bool = True):
    """Analyse the lattice whose strongest spot is ``k1``: None if not a hexagonal lattice, else a dict
    with the three first-order spots, a (px), sublattice ratio, column width ratio, spot strength.
    ``unconfirmed``: a list; a hexagon that passes every test but the second-order confirmation is
    analysed all the same and appended there (None is still returned for it). ``step``: look for
    lower orders (False: ``k1`` is taken as a first-order spot)."""
    k1 = np.asarray(k1, float)
    k1_start, q1_start = k1, q1
    kc = S.centroid(k1)                              # sub-bin position: rotations predict better
    pred = S.rot(kc, 120.0)
    bb, cc = S.spots(np.stack([k1, pred]), np.array([1, max(1, int(round(0.025 * np.hypot(*pred))))]))
    q1, k2, q2 = float(cc[0]), bb[1], float(cc[1])    # its contrast (3x3 window); the 120-degree spot
    # the third spot of the hexagon is exactly k1 + k2 (at 60 degrees): a 3x3 window suffices there,
    # so noise rarely fakes it
    q60 = S.spots((k1 + k2)[None, :], 1)[1][0]
    score = float(np.cbrt(max(q1, 1e-3) * max(q2, 1e-3) * max(q60, 1e-3)))
    if score < PEAK_MIN or min(q1, q2, q60) < SPOT_FAINT:
        return None
    stepped = weak = False
    for _ in range(3 if step else 0):                # step down to the first order ({10-10}) spots
        # every lower order at once; the first (in _LOWER's order) whose 60-degree partner also
        # stands out wins
        kc = S.centroid(k1)
        preds = np.stack([S.rot(kc, ang) * f for f, ang in _LOWER])
        b, qb = S.spots_auto(preds)
        floor = max(SPOT_MIN, STEP_RATIO * q1)         # a real lower order, not window leakage
        cand = np.flatnonzero((qb >= floor) & (np.hypot(*(b * S.scale).T) * max(S.h, S.w) >= 6))
        if not len(cand):
            break
        _, q60b = S.spots_auto(S.rot_many(S.centroids(b[cand]), 60.0))
        good = cand[q60b >= floor]
        if not len(good):
            break
        k1, q1, stepped = b[good[0]], float(qb[good[0]]), True
    if not stepped:
        # a lattice shows its second order ({11-20}) exactly at k1 - k2, 2 k1 + k2 and k1 + 2 k2
        # (3x3 windows); where that lies beyond the band, the first-order hexagon must be strong
        k2nd = np.array([k1 - k2, 2 * k1 + k2, k1 + 2 * k2], float)
        inside = np.abs(k2nd * S.scale).max(axis=1) < min(R_MAX * S.bin, 0.49)
        if inside.sum() < 2:
            if score < 2 * PEAK_SURE:
                return None
        else:
            _, c2 = S.spots(k2nd[inside], 1)
            if np.exp(np.log(np.maximum(c2, 1e-3)).mean()) < (SECOND_MIN if score < PEAK_SURE else SECOND_MIN / 2):
                if unconfirmed is None:
                    return None
                weak = True
    kc = S.centroid(k1)
    bb, cc = S.spots_auto(np.stack([S.rot(kc, 120.0), S.rot(kc, 60.0)]))
    k2, q2, k60, q60 = bb[0], float(cc[0]), bb[1], float(cc[1])
    rho = _rho(S.F, k1, k2)
    if not stepped and rho < RHO_ELEVEN_FINE:
        # phase ~0: the {11-20} triple of a honeycomb (its structure factor is real and positive)
        # looks like this; faint first-order spots 30 degrees off at 1/sqrt(3) then decide. Up to
        # RHO_ELEVEN_FINE only for a faint hexagon whose first order would have resolved columns
        # (a >= RS_MIN_A_PX frame px), which the real-space veto then checks: a hole at fine sampling
        # leaves the {11-20} phase at 0.22-0.23 (seeds 2041, 4001: graphene at 0.047-0.059 A/px and
        # 5e5-9e5 e/A^2 called not_graphene)
        for ang in (30.0, -30.0):
            b, qb = S.spot(S.rot(k1, ang) / np.sqrt(3.0))
            b2, qb2 = S.spot(S.rot(b, 120.0))
            # (a strong lattice, e.g. WS2 at 0.1-0.3, is not looked at 30 degrees off beyond RHO_ELEVEN)
            fine_ok = rho < RHO_ELEVEN or (S.a_px(b) >= RS_MIN_A_PX and score < BLOB_SKIP_STRENGTH)
            if min(qb, qb2) >= SPOT_FAINT and np.hypot(*(b * S.scale)) * max(S.h, S.w) >= 6 and fine_ok:
                k1, q1, k2, q2 = b, qb, b2, qb2
                k60, q60 = S.spot(S.rot(k1, 60.0))
                rho = _rho(S.F, k1, k2)
                break
    k3 = -(k1 + k2)
    cen, psum = S.centroids(np.stack([k1, k2, k3]), with_sum=True)
    radii = list(np.hypot(*(cen * S.scale).T))
    amps1 = psum / S.box_gain(np.stack([k1, k2, k3]))
    rmean = float(np.mean(radii))
    if (max(radii) - min(radii)) > RADII_TOL * rmean:     # not one lattice (strain and drift stay below)
        return None
    d1_px = 1.0 / rmean
    a_px = d1_px * 2.0 / np.sqrt(3.0)
    if a_px * S.bin < MIN_A_PX:
        return None
    q3 = S.spot(k3)[1]
    # column width from the second-order ({11-20}) spots
    k2nd = np.stack([k1 - k2, k2 - k3, k3 - k1])
    k2nd = k2nd[(np.abs(k2nd) + 1 <= 0.5 / S.scale).all(axis=1)]       # inside the Nyquist box
    amps2 = S.centroids(k2nd, with_sum=True)[1] / S.box_gain(k2nd) if len(k2nd) else []
    width = float("nan")
    if len(amps2):
        n = max(S.h, S.w)
        nb = len(S.lmean)
        d1 = np.exp(S.lmean[min(int(rmean * n), nb - 1)]) * 9
        d2 = np.exp(S.lmean[min(int(np.sqrt(3.0) * rmean * n), nb - 1)]) * 9
        A1 = max(np.mean(amps1) - d1, 1e-30)
        A2 = max(np.mean(amps2) - d2, 1e-30)
        ratio = np.sqrt(A2 / A1) / ((1 + rho) / np.sqrt(1 + rho * rho - rho))
        sigma_px = np.sqrt(-np.log(min(ratio, 0.999))) / (2 * np.pi) * d1_px
        width = float(2.3548 * sigma_px / a_px)
    if stepped and np.isfinite(width) and width < SUBHARMONIC_WIDTH:
        # the spots stepped down to are no first order: the "second order" (the spots stepped down from)
        # outshines them beyond what any honeycomb of columns at least as wide as the probe gives (its
        # {11-20} over {10-10} amplitude is at most the structure factors' ratio, <= 2). A faint
        # sub-harmonic 30 degrees off a strong lattice (MoS2 beside graphene at 0.15 A/px: a = 37 px and
        # FWHM / a = 0.01 below MoS2's 21.4 px) is no lattice of the sample: the spots started from are
        # the first order
        return _lattice(S, k1_start, q1_start, unconfirmed, step=False)
    strength = float(min(q1, q2, max(q3, q60)))
    if strength < SPOT_FAINT:                        # e.g. a step down onto a stray bin
        return None
    if min(S.h, S.w) / a_px >= RICH_CELLS and strength < RICH_STRENGTH:
        # hundreds of unit cells in the field put a real lattice's power into sharp spots far above the
        # noise: faint spots at such a small period are noise bins that happen to form a hexagon
        return None
    # a_px in the frame's own pixels (the spectrum's pixels are S.bin of them)
    out = {"spots": (k1, k2, k3), "a_px": a_px * S.bin, "rho": rho, "width": width, "strength": strength}
    if weak:
        unconfirmed.append(out)
        return None
    return out


def _agreed(weak: list, S: Spectrum) -> dict | None:
    """A hexagon whose second order does not show, found from AGREE_MIN of the candidate spots tried
    (each its own start, each passing the first-order tests): every spot of the lattice stands out
    on its own, which a chance alignment of noise bins rarely does. Fine sampling needs this: a
    field of a few unit cells (a 512 px frame at 0.03 A/px is 15 A wide) puts the first order a few
    bins from the origin, and columns as wide as the probe (0.7-1.3 A) leave the {11-20} spots
    (1.23 A) at the noise. Returns the first (best-scored) of the largest agreeing group, or None."""
    # only where the columns are wide in frame px (fine sampling): at coarser sampling the field holds
    # hundreds of unit cells and the {11-20} spots lie well inside the band, so a real lattice confirms
    # itself; there the three strongest noise bins that happen to form a hexagon are each other's
    # partners and "agree" by construction (a vacuum frame at 0.042 A/px: a = 8.4 px, seed 3001)
    weak = [w for w in weak if w["a_px"] >= AGREE_MIN_A_PX]
    if len(weak) < AGREE_MIN:
        return None
    best = []
    for a in weak:
        grp = [b for b in weak if _near_spots(b["spots"], a["spots"], S)]
        if len(grp) > len(best):
            best = grp
    return best[0] if len(best) >= AGREE_MIN else None


#: |g| of a hexagonal lattice's higher-order reflections over its first order's: {11-20}, {20-20}, {21-30}, {30-30}
_HIGHER = np.sqrt(np.array([3.0, 4.0, 7.0, 9.0]))


def _higher_order(lat: dict, lat2: dict) -> bool:
    """Whether the hexagon ``lat2`` lies on a higher-order ring of ``lat`` (its lattice constant within
    HIGHER_TOL of a / sqrt 3, a / 2, a / sqrt 7, a / 3): that lattice's own reflections, which a distorted
    crystal moves off the exact m k1 + n k2 (hBN at 0.156 A/px: its {11-20} spots 7 bins off, called graphene
    with a = 1.44 A). Graphene beside MoS2 or WS2 lies at a ratio of 1.28, beside hBN on the first ring."""
    r = lat["a_px"] / lat2["a_px"]
    return bool((np.abs(r / _HIGHER - 1.0) <= HIGHER_TOL).any())


def _same_probe(lat: dict, lat2: dict) -> bool:
    """Whether two lattices of one frame have atom columns of about the same width in px (FWHM = width x a;
    True when either width is unmeasured). The probe is fixed in A and both lie in the same frame, so the
    columns of a second crystal beside the first are as wide in px as the first's (graphene beside MoS2 at
    0.15 A/px, random imaging: 0.76-1.17 of MoS2's); a 'second lattice' of much narrower columns is no
    crystal under this probe (WS2 and MoS2 at 0.057-0.069 A/px: fine hexagons of a = 0.57-0.72 A whose
    columns were 0.21-0.35 of the crystal's, called graphene)."""
    w1, w2 = lat["width"] * lat["a_px"], lat2["width"] * lat2["a_px"]
    if not (np.isfinite(w1) and np.isfinite(w2) and w1 > 0):
        return True
    return PROBE_RATIO[0] <= w2 / w1 <= PROBE_RATIO[1]


def _graphene_like(lat: dict, px: float | None) -> tuple[bool, str]:
    """(is graphene, why not) for an analysed lattice."""
    rho, width = lat["rho"], lat["width"]
    tmd = px is not None and TMD_A[0] <= lat["a_px"] * px <= TMD_A[1]
    if rho < RHO_GRAPHENE:
        return False, f"2 sublattices of unequal contrast ({rho:.2f})"
    if rho < RHO_WEAK and lat["strength"] < STRENGTH_WEAK:
        # faint spots measure the contrast less well: equal sublattices must show more clearly
        return False, f"faint spots and 2 sublattices of not clearly equal contrast ({rho:.2f})"
    if rho < RHO_BORDER and tmd:
        return False, f"2 sublattices of slightly unequal contrast ({rho:.2f}) and a as MoS2/WS2"
    if np.isfinite(width) and not (WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]):
        return False, (f"atom columns {width:.2f} of a wide (graphene {WIDTH_RANGE[0]}-{WIDTH_RANGE[1]})")
    return True, ""


def classify_material(image, pixel_size_A: float | None = None, want_mask: bool = True) -> MaterialVerdict:
    """The material verdict of one frame.

    image : (H, W) array of detector counts (any dtype; at least 64 x 64 px).
    pixel_size_A : declared A per pixel, or None. It only converts a to A and decides borderline
        contrasts (module docstring); the verdict comes from the image.
    want_mask : also return the graphene region (a coarse mask) for graphene frames.
    """
    raw = np.asarray(image)
    if raw.ndim != 2 or min(raw.shape) < 64:
        raise ValueError(f"classify_material needs a 2-D frame of at least 64 x 64 px, got shape {raw.shape}")
    px = float(pixel_size_A) if pixel_size_A is not None and np.isfinite(pixel_size_A) and pixel_size_A > 0 else None
    if raw.dtype.kind in "ui" and raw.dtype.itemsize <= 2 and min(raw.shape) >= BIN_FROM_PX:
        # 8- and 16-bit detector counts: all finite, and the 2 x 2 sums are exact in float32 in any order, so
        # the frame is binned straight from its integers (no float32 copy of the whole frame first)
        if raw.max() == raw.min():
            return MaterialVerdict("vacuum", "constant frame: no sample (or beam blanked)")
        shape = raw.shape
        img, b = block_sum(_binned_window(raw), 2), 2
    else:
        img = np.asarray(raw, dtype=np.float32)
        finite = np.isfinite(img)
        if not finite.all():
            if not finite.any():
                return MaterialVerdict("vacuum", "no finite pixels: nothing to see")
            img = np.where(finite, img, np.float32(np.median(img[finite])))
        if float(img.max()) == float(img.min()):
            return MaterialVerdict("vacuum", "constant frame: no sample (or beam blanked)")
        shape = img.shape
        img, b = _binned(img)
    v = _classify(img, b, px, want_mask, shape)
    if v.is_graphene:
        return v
    cleaned = None
    if not (v.symmetry == "hexagonal" and v.peak_strength >= BLOB_SKIP_STRENGTH):
        # (a strong crystal lattice that is not graphene: adatoms did not hide it)
        # a few heavy adatoms (or Si clusters) far brighter than the lattice dominate a small field's
        # spectrum even when clipped: try once more with them replaced by the background
        cleaned = without_blobs(img)
        if cleaned is not None:
            img2, n_blobs = cleaned
            v2 = _classify(img2, b, px, want_mask, shape)
            if v2.is_graphene:
                v2.reason += (f" (after masking {n_blobs} bright object{'s' if n_blobs > 1 else ''} much brighter "
                              "than the lattice)")
                return v2
    # fine sampling: a lattice of a few unit cells whose spots the windowed spectrum leaves at the noise
    # (not searched where no lattice of the searched scales could agree with the windowed spectrum's)
    if not _fine_agrees(v, FINE_A_PX):
        return v
    # (on the frame with those bright objects replaced, where it has any: clipped, a heavy adatom is still
    # a disc whose transform fills the first-order ring of a field this small)
    fine_img = img if cleaned is None else cleaned[0]
    m = fine_hexagon(fine_img, b)
    lat, how = fine_accept(m), ""
    if lat is None and (m is None or m["score"] < FINE_SCORE_SURE):
        # a hole, a bright patch or many bright adatoms in a field of few unit cells: the part of the field at
        # the lattice's own level alone (nothing left out of a uniform field: no second search there; nor after
        # a clear hexagon the whole field rejects: a crystal's part has the crystal's sublattices)
        lat = fine_accept(fine_hexagon_level(fine_img, b))
        how = " (over the part of the field at the lattice's own level)" if lat is not None else ""
    if lat is None and v.verdict == "vacuum" and min(shape) >= VACUUM_RESCUE_MIN_SIDE_PX:
        # nothing above the noise in the windowed spectrum, no diffuse structure: white noise is all a faint
        # hexagon competes with there (on ~630 development frames called vacuum that were not graphene its best
        # hexagon scored <= 4.4, <= 4.04 with a ratio >= 0.8; a fresh seed's vacuum frame then reached 5.3 with
        # 0.89), so a lower score with clearly equal sublattices is a lattice (graphene at C-atom SNR 1.0-1.9 and
        # 0.03-0.06 A/px scored 4.5-5.8 with ratios 0.87-1.0)
        lat = fine_accept(m, FINE_SCORE_VACUUM, FINE_RHO_VACUUM)
        how = " (a faint hexagon in a frame with nothing else above the noise)" if lat is not None else ""
    if lat is None and v.verdict != "vacuum" and not (v.symmetry == "hexagonal" and v.peak_strength >= PART_SKIP_STRENGTH):
        # part of the field graphene, the rest clutter of the columns' own size (a contamination patch, a
        # hole's edge): the clutter raises the whole field's transform around graphene's spots; each half alone
        # (not beside a strong crystal lattice of another material: its halves show the same crystal, and the
        # search would cost a MoS2 or hBN series ~8 ms per full check for nothing)
        lat = fine_accept(fine_hexagon_parts(fine_img, b), FINE_PART_SCORE, FINE_PART_RHO)
        how = f" (in the {lat['part']} half of the field)" if lat is not None else ""
    if lat is None or not _fine_agrees(v, lat["a_px"]) or real_space_veto(img, b, lat) is not None:
        return v
    a_px = lat["a_px"]
    far = px is not None and abs(a_px * px / GRAPHENE_A - 1) > A_TOLERANCE
    note = (f"; at the declared pixel size a = {a_px * px:.2f} A, not 2.46 A: the pixel size looks wrong"
            if far else "")
    return MaterialVerdict("graphene", f"hexagonal lattice a = {_fmt_len(a_px, px)} with 2 sublattices of equal "
                           f"contrast ({lat['rho']:.2f}): graphene; a field of few unit cells, its spots measured at exact "
                           f"frequencies without a window{how} (hexagon {lat['strength']:.1f} over the noise; the windowed "
                           f"spectrum said: {v.reason}){note}",
                           lattice_constant_px=a_px, lattice_constant_A=a_px * px if px else float("nan"),
                           symmetry="hexagonal", sublattice_ratio=lat["rho"], peak_strength=lat["strength"],
                           diffuse_excess=v.diffuse_excess, graphene_fraction=1.0)


def _fine_agrees(v: MaterialVerdict, a_px: float | tuple) -> bool:
    """Whether the windowed spectrum's verdict leaves room for a fine-sampling lattice of ``a_px``: no
    clear hexagon of its own (spots below PEAK_SURE), or one of the same scale or at its {11-20} (a / sqrt 3);
    ``a_px`` a (lo, hi) range: for any a in it.
    (An hBN frame at 0.12 A/px, a strong lattice of 21 px, showed a faint 'honeycomb' of 48 px beside it.)"""
    if v.symmetry != "hexagonal" or v.peak_strength < PEAK_SURE:
        return True
    if isinstance(a_px, tuple):                  # any a in the range (lo, hi)
        lo, hi = a_px
        return any(lo * f * (1 - RADII_TOL) < v.lattice_constant_px < hi * f * (1 + RADII_TOL)
                   for f in (1.0, 1.0 / np.sqrt(3.0)))
    return any(abs(v.lattice_constant_px / (a_px * f) - 1) < RADII_TOL for f in (1.0, 1.0 / np.sqrt(3.0)))


def _classify(img: np.ndarray, b: int, px: float | None, want_mask: bool, shape) -> MaterialVerdict:
    """The verdict of the (binned by ``b``) frame ``img``; ``shape`` is the frame's own."""
    S = Spectrum(img, b)
    cands = S.strongest()
    res = {"diffuse_excess": S.diffuse}
    lat = None
    k1, q1 = cands[0] if cands else (np.zeros(2), 0.0)
    weak: list = []
    for k, q in cands:
        if q < PEAK_MIN:
            break
        lat = _lattice(S, k, q, weak)
        if lat is not None:
            k1, q1 = k, q
            break
    if lat is None:
        lat = _agreed(weak, S)
    rescued_from = ""
    other_refl = own_mask = None    # another crystal beside the graphene: its reflections, graphene's mask
    if lat is None:
        lat = real_space_candidates(img, b, S, cands)
        rescued_from = "no lattice the Fourier cues accept" if lat is not None else ""
    if lat is None:
        if q1 >= 10 * PEAK_MIN:
            a_px = S.bin / np.hypot(*(k1 * S.scale))
            return MaterialVerdict("not_graphene", f"a crystal lattice that is not hexagonal (period "
                                   f"{_fmt_len(a_px, px)}): not graphene", lattice_constant_px=a_px,
                                   lattice_constant_A=a_px * px if px else np.nan, symmetry="not hexagonal",
                                   peak_strength=q1, **res)
        return _no_lattice(res, S.diffuse, q1)
    ok, why = (True, "") if rescued_from else _graphene_like(lat, px)
    other = (f"; resolved columns on a honeycomb, {lat['real_space']} or more sites per sublattice, equally "
             f"bright in real space ({rescued_from})") if rescued_from else ""
    if not ok:
        rescued = real_space_rescue(img, b, lat)
        if rescued is not None:
            other = (f"; resolved columns on a honeycomb, {rescued['real_space']} or more sites per sublattice, "
                     f"equally bright in real space (the Fourier cues said {why})")
            lat, ok = rescued, True
    if not ok and lat["a_px"] >= RS_MIN_A_PX and lat["strength"] < BLOB_SKIP_STRENGTH:
        # a faint rejected hexagon at fine sampling may be clutter the size of the columns (a hole's
        # or a patch's rings): graphene's scale is then searched in real space (never after a strong
        # hexagon: a WS2 frame at 0.067 A/px, strength ~4000, aliased into a 'honeycomb' of 4.07 A; nor
        # below a finer lattice; nor without any hexagon: that cost every amorphous frame ~16 ms and
        # kept no graphene frame more on the development seeds)
        rescued = real_space_scan(img, b, lat["strength"])
        if rescued is not None:
            other = (f"; resolved columns on a honeycomb, {rescued['real_space']} or more sites per sublattice, "
                     f"equally bright in real space (the Fourier cues found a = {_fmt_len(lat['a_px'], px)} with {why})")
            lat, ok = rescued, True
    if not ok:
        # a second lattice (part of the field graphene, the rest another crystal)?
        # (every reflection m k1 + n k2 of the first lattice is left out: its higher orders are no
        # second lattice)
        k1_, k2_ = (np.asarray(v, float) for v in lat["spots"][:2])
        m, n = _MN
        pts = m[:, None] * k1_[None, :] + n[:, None] * k2_[None, :]
        pts = pts[((m != 0) | (n != 0)) & (np.abs(pts * S.scale).max(axis=1) < 0.5)]
        # a strained or rippled crystal smears its reflections beyond the excluded bins, along their rings
        # (ripples turn them, strain moves them radially by a few %), and they can use up the candidates tried
        # (a MoS2 flake beside graphene at 0.15 A/px: every one tried was MoS2's, graphene's spots, contrast
        # 60-200, never): the candidates off the first lattice's rings are tried first, then those on them
        rings = np.hypot(*(np.vstack([k1_[None, :], pts]) * S.scale).T) * max(S.h, S.w)
        def candidates():           # (the second search only when the first one's candidates found nothing)
            yield from S.strongest(exclude=pts, lattice=(k1_, k2_), rings=rings, ring_rel=SMEAR_REL,
                                   top_k=SECOND_TOP_K)
            yield from S.strongest(exclude=pts, lattice=(k1_, k2_))

        more = candidates()
        lat2 = None
        tried = set()                   # the two searches can return the same bin: analysed once
        for k, q in more:
            key = tuple(np.asarray(k).ravel().tolist())
            if q < PEAK_MIN or key in tried:
                continue
            tried.add(key)
            lat2 = _lattice(S, k, q)
            if lat2 is not None and (on_lattice(np.asarray(lat2["spots"][:2], float), k1_, k2_).any()
                                     or _near_spots(lat2["spots"], lat["spots"], S)):
                lat2 = None         # the first lattice's reflections, or its own spots smeared by strain
            if (lat2 is not None and abs(lat2["a_px"] / lat["a_px"] - 1.0) <= SMEAR_REL
                    and not _graphene_like(lat2, px)[0]):
                lat2 = None         # another strained or rotated part of the same crystal: look on
            if lat2 is not None and _higher_order(lat, lat2):
                lat2 = None         # a higher order of the first lattice, its spots moved off m k1 + n k2 by distortion
            if lat2 is not None and not _same_probe(lat, lat2):
                lat2 = None         # columns of another width in px than the first lattice's: not atoms under this probe
            # a second lattice must stand out clearly: faint noise hexagons (strength 4-10) are common in
            # the many bins left once a strong lattice is excluded (an hBN frame read as graphene by one);
            # one that is not graphene (e.g. graphene's own lattice read through a stray {11-20} triple) ends
            # nothing: the next candidate may measure it better
            if lat2 is not None and lat2["strength"] >= STRENGTH_WEAK and _graphene_like(lat2, px)[0]:
                break
            lat2 = None
        if lat2 is not None:
            # two crystals side by side hold different parts of the field: a 'second lattice' whose region (the
            # mask, with the first crystal's part left out) is nowhere is a feature of the first crystal (WS2 and
            # MoS2 at 0.26-0.29 A/px: faint hexagons at 1.27-1.30 x their first-order radius, strength 13-14
            # beside 9,000-15,000, lay only where the crystal was; graphene beside a MoS2 flake kept 51-82 %)
            refl = np.vstack([np.asarray(lat["spots"], float), pts])
            own = graphene_mask(S, lat2["spots"], shape, refl)
            if own[1] < OWN_MIN_FRACTION:
                why += (f"; a faint hexagonal lattice a = {_fmt_len(lat2['a_px'], px)} lies only where this one "
                        "is")
            else:
                other = (f"; another hexagonal lattice a = {_fmt_len(lat['a_px'], px)} with {why} covers part of "
                         "the field")
                other_refl, own_mask = refl, own
                lat, ok = lat2, True
    if ok:
        veto = real_space_veto(img, b, lat)
        if veto is not None:
            ok, why = False, (f"2 sublattices of unequal contrast in real space ({veto[0]:.2f} over {veto[1]} sites "
                              f"per sublattice), though the Fourier cues found them equal ({lat['rho']:.2f})")
    a_px = lat["a_px"]
    fields = dict(lattice_constant_px=a_px, lattice_constant_A=a_px * px if px else float("nan"),
                  symmetry="hexagonal", sublattice_ratio=lat["rho"], column_width_ratio=lat["width"],
                  peak_strength=lat["strength"], **res)
    desc = f"hexagonal lattice a = {_fmt_len(a_px, px)}"
    if not ok:
        return MaterialVerdict("not_graphene", f"{desc} with {why}: not graphene", **fields)
    far = px is not None and abs(a_px * px / GRAPHENE_A - 1) > A_TOLERANCE
    note = (f"; at the declared pixel size a = {a_px * px:.2f} A, not 2.46 A: the pixel size looks wrong"
            if far else "")
    mask, frac = (None, 1.0)
    if want_mask and other_refl is not None:
        mask, frac = own_mask
    elif want_mask and lat["spots"] is not None:
        mask, frac = graphene_mask(S, lat["spots"], shape)
    return MaterialVerdict("graphene", f"{desc} with 2 sublattices of equal contrast ({lat['rho']:.2f}): "
                           f"graphene{other}{note}", graphene_fraction=frac, mask=mask, **fields)


#: Frames with both sides at least this are binned 2 x 2 before the FFT (a quarter of the work; the
#: bins keep their frequencies in cycles per field, and graphene's second order stays below the binned
#: Nyquist frequency up to 0.31 A/px); binned frames larger than MAX_SIDE_PX are cropped at the centre.
BIN_FROM_PX = 384
MAX_SIDE_PX = 512


def _binned_window(a: np.ndarray) -> np.ndarray:
    """The central part of ``a`` that :func:`_binned` bins: whole 2 x 2 blocks, at most MAX_SIDE_PX of them a side."""
    h, w = a.shape
    h2, w2 = min(h // 2, MAX_SIDE_PX), min(w // 2, MAX_SIDE_PX)
    y0, x0 = (h - 2 * h2) // 2, (w - 2 * w2) // 2
    return a[y0:y0 + 2 * h2, x0:x0 + 2 * w2]


def _binned(img: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = img.shape
    if min(h, w) < BIN_FROM_PX:
        return img, 1
    a = _binned_window(img)
    out = a[0::2, 0::2] + a[1::2, 0::2]
    out += a[0::2, 1::2]
    out += a[1::2, 1::2]
    return out, 2


#: (m, n) of the reflections m k1 + n k2 of a first lattice left out of the search for a second one
_MN = tuple(g.ravel() for g in np.mgrid[-2:3, -2:3])
for _g in _MN:
    _g.setflags(write=False)


def _fmt_len(a_px: float, px: float | None) -> str:
    return f"{a_px * px:.2f} A" if px else f"{a_px:.1f} px"


def _no_lattice(res: dict, diffuse: float, q1: float) -> MaterialVerdict:
    res = {**res, "peak_strength": q1}
    if diffuse >= DIFFUSE_MIN:
        return MaterialVerdict("amorphous", f"no lattice, diffuse structure at atomic spacings (excess {diffuse:.1f}): "
                               "amorphous carbon or contamination", **res)
    return MaterialVerdict("vacuum", f"no lattice and no atomic structure above the noise (excess {diffuse:.1f}): vacuum",
                           **res)
