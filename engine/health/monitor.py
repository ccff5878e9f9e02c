"""Per-frame health verdicts and the series' pixel-size decision.

:class:`HealthMonitor` keeps the state of one series (the scale decision, the recent frames' dose,
the last frame's shape and heavy atoms) and judges each frame twice:

* :meth:`HealthMonitor.before` -- from the raw pixels, before the network: ``non_finite``, ``blank``
  (constant or dark: beam blanked), ``saturated``, ``glitch`` (a dose dip or spike against the series'
  recent frames, or a scan tear: a row-mean jump), ``fov_jump`` (shape change within a series),
  ``too_large`` (the model grid would exceed ``max_model_px``), and the pixel size to analyse at
  (``scale``: ``declared`` / ``lattice`` / ``override``);
* :meth:`HealthMonitor.after` -- from the atoms found: ``glitch`` (a scan tear: a band of rows
  shifted sideways, found in the pixels by :meth:`before` and confirmed by the bonds crossing its edge,
  :mod:`engine.health.tear`), ``no_lattice`` (far fewer atoms than graphene
  holds in the field), ``fov_jump`` (the heavy atoms' constellation does not match the previous
  frame's under any drift the tracker allows: a stage move).

Frames that are not ``ok`` are shown (their atoms marked unreliable) but the pipeline does not feed
them to the tracker: they raise no events and neither confirm nor break a debounce window, exactly
like a dropped frame. Plain data out: :class:`FrameHealth`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engine.chem.quantile import median, percentile, percentiles
from engine.health.scale import ScaleEstimate, estimate_pixel_size
from engine.health.tear import confirm_tear, row_shift_candidates

log = logging.getLogger(__name__)

#: Every verdict a frame can get besides ``ok``, in reporting order.
VERDICTS: tuple[str, ...] = ("blank", "non_finite", "saturated", "no_lattice", "low_snr", "glitch", "fov_jump",
                             "too_large")
#: Verdicts after which the network is not run at all (nothing to find, or too costly).
SKIP_VERDICTS = frozenset({"blank", "non_finite", "too_large"})
#: Graphene's areal density of atoms (2 atoms per 5.24 A^2 cell).
GRAPHENE_ATOMS_PER_A2 = 2.0 / (2.46 ** 2 * np.sqrt(3.0) / 2.0)


@dataclass
class FrameHealth:
    """The health of one frame (plain data; ``FrameResult.health``).

    verdicts : () when the frame is ok, else names from :data:`VERDICTS`; reasons : one short human
    sentence per verdict. scale_source : "declared" / "lattice" / "override"; declared_pixel_size_A :
    the frame's own calibration (nan when it had none); estimated_pixel_size_A / _uncertainty_A : the
    lattice estimate in force for the series (nan when none); pixel_size_A : what the frame was
    analysed at. lattice_strength : the estimator's lattice significance. snr : estimated C-atom
    signal-to-noise ratio (nan when not measured). model_pixel_size_A : the coarser model-grid sampling a
    ``too_large`` frame is analysed at (nan: the model's own; a ``too_large`` frame with nan is skipped).
    """

    verdicts: tuple = ()
    reasons: tuple = ()
    scale_source: str = "declared"
    declared_pixel_size_A: float = float("nan")
    estimated_pixel_size_A: float = float("nan")
    estimated_uncertainty_A: float = float("nan")
    pixel_size_A: float = float("nan")
    lattice_strength: float = float("nan")
    snr: float = float("nan")
    model_pixel_size_A: float = float("nan")     # a too_large frame analysed on a coarser model grid: its
                                                 # sampling (A/px); nan: the model's own
    tear_rows: tuple = ()                        # ((row, shift_px), ...): row boundaries where the raw pixels
                                                 # show a sideways step (engine.health.tear); the atoms
                                                 # confirm one (a scan tear: glitch) or none in after()
    scale_note: str = ""                         # why the pixel size differs from the lattice estimate in
                                                 # force (engine.pipeline: the estimate measured another
                                                 # lattice of the field than graphene's); "" when it does not

    @property
    def ok(self) -> bool:
        return not self.verdicts

    @property
    def verdict(self) -> str:
        """``ok`` or the verdicts joined with ``+`` (one CSV cell)."""
        return "+".join(self.verdicts) if self.verdicts else "ok"

    def add(self, verdict: str, reason: str) -> None:
        if verdict not in self.verdicts:
            self.verdicts = self.verdicts + (verdict,)
            self.reasons = self.reasons + (reason,)

    def to_dict(self) -> dict:
        def num(v):
            return None if v is None or not np.isfinite(v) else float(v)

        return {"verdict": self.verdict, "verdicts": list(self.verdicts), "reasons": list(self.reasons),
                "scale_source": self.scale_source, "declared_pixel_size_A": num(self.declared_pixel_size_A),
                "estimated_pixel_size_A": num(self.estimated_pixel_size_A),
                "estimated_uncertainty_A": num(self.estimated_uncertainty_A),
                "pixel_size_A": num(self.pixel_size_A), "snr": num(self.snr),
                "model_pixel_size_A": num(self.model_pixel_size_A)}


@dataclass
class _Series:
    name: str | None = None
    run: int = 0
    shape: tuple | None = None
    frames: int = 0
    estimate: ScaleEstimate | None = None
    estimate_frame: int = -1
    warned: bool = False
    means: deque = field(default_factory=lambda: deque(maxlen=16))
    floors: deque = field(default_factory=lambda: deque(maxlen=16))     # dark level per frame (0.1th percentile)
    heavy_A: np.ndarray | None = None
    chosen_A: float | None = None
    found: list = field(default_factory=list)
    agreeing: int = 0


def parse_scale(value) -> tuple[str, float | None]:
    """``"auto"`` / ``"declared"`` / a positive number of A/px (as str or float) -> (mode, value).
    Raises ValueError with one clear line otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
    else:
        s = str(value).strip().lower()
        if s in ("auto", "declared"):
            return s, None
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"scale must be auto, declared or a pixel size in A/px, got {value!r}") from None
    if not (np.isfinite(v) and 0 < v < 100):
        raise ValueError(f"scale must be a positive pixel size in A/px, got {value!r}")
    return "override", v


class HealthMonitor:
    """Frame health for one pipeline (one thread). ``cfg``: :class:`stemwatch.config.HealthConfig`;
    ``model_pixel_size_A``: the network grid's sampling (for the model-grid cap)."""

    def __init__(self, cfg=None, model_pixel_size_A: float = 0.2):
        from stemwatch.config import HealthConfig

        self.cfg = cfg or HealthConfig()
        self.mode, self.override_A = parse_scale(self.cfg.scale)
        self.model_pixel_size_A = float(model_pixel_size_A)
        self.s = _Series()
        self.warnings: list[str] = []

    def reset(self) -> None:
        self.s = _Series()

    # ------------------------------------------------------------------------------ scale
    def _scale(self, img: np.ndarray, declared: float, h: FrameHealth, jump: bool) -> None:
        s, cfg = self.s, self.cfg
        if self.mode == "override":
            h.scale_source, h.pixel_size_A = "override", float(self.override_A)
            return
        if self.mode == "declared":
            h.pixel_size_A = declared
            return
        have_decl = np.isfinite(declared) and declared > 0

        def overrules(e) -> bool:            # an estimate that would replace the declared size
            return bool(have_decl and e is not None and e.ok and
                        abs(declared / e.pixel_size_A - 1.0) > cfg.scale_tolerance)

        # estimate on the first frames until two agree (three when they overrule the declared size; one
        # very clear frame is used meanwhile), then every scale_recheck_frames frames (a fifth of that
        # while overruling the declared size) and after a jump
        settled = s.estimate is not None and s.estimate.ok and s.agreeing >= (3 if overrules(s.estimate) else 2)
        due = not settled and s.frames <= cfg.scale_attempt_frames
        recheck = max(1, cfg.scale_recheck_frames // 5) if overrules(s.estimate) else cfg.scale_recheck_frames
        due |= s.frames - s.estimate_frame >= recheck or jump
        if due:
            est = estimate_pixel_size(img)
            s.estimate_frame = s.frames
            if est.ok and not (have_decl and est.distorted):     # a distorted lattice never overrules
                s.found.append(est)
                s.found = s.found[-5:]
            best, s.agreeing = _consensus(s.found)
            if best is not None and s.estimate is not None and s.estimate.ok and \
                    abs(best.pixel_size_A / s.estimate.pixel_size_A - 1.0) > cfg.scale_tolerance:
                log.warning("series %s: lattice pixel size changed %.4f -> %.4f A/px", s.name,
                            s.estimate.pixel_size_A, best.pixel_size_A)
            s.estimate = best if best is not None else ScaleEstimate(float("nan"), float("nan"), est.strength,
                                                                      0, False)
        est = s.estimate
        h.lattice_strength = est.strength if est is not None else float("nan")
        if est is not None and est.ok:
            h.estimated_pixel_size_A, h.estimated_uncertainty_A = est.pixel_size_A, est.uncertainty_A
        # the declared size stands while as many recent frames agree with it as with the estimate (a
        # misread lattice on two early frames must not overrule a right declaration for a whole series)
        n_declared = sum(1 for e in s.found if abs(declared / e.pixel_size_A - 1.0) <= cfg.scale_tolerance) \
            if have_decl else 0
        if est is not None and est.ok and (not have_decl or (overrules(est) and s.agreeing > n_declared)):
            # keep one value per series unless the lattice really moved (the tracker resets on a change)
            if s.chosen_A is None or abs(est.pixel_size_A / s.chosen_A - 1.0) > cfg.scale_tolerance:
                s.chosen_A = est.pixel_size_A
            h.scale_source, h.pixel_size_A = "lattice", float(s.chosen_A)
            if not s.warned:
                s.warned = True
                msg = (f"series {s.name}: declared pixel size {declared:.4g} A/px disagrees with the lattice "
                       f"({est.pixel_size_A:.4g} +- {est.uncertainty_A:.2g} A/px); analysing at the lattice value"
                       if have_decl else f"series {s.name}: no declared pixel size; the lattice gives "
                       f"{est.pixel_size_A:.4g} +- {est.uncertainty_A:.2g} A/px")
                log.warning("%s", msg)
                self.warnings.append(msg)
        else:
            s.chosen_A = None
            h.pixel_size_A = declared if have_decl else float("nan")

    # ------------------------------------------------------------------------------ before
    def before(self, frame) -> FrameHealth:
        """Verdicts from the raw pixels and the pixel size to analyse at."""
        cfg = self.cfg
        run = int(getattr(frame, "run", 0))
        if frame.series != self.s.name or run != self.s.run:     # a new series, or a series id started again
            self.s = _Series(name=frame.series, run=run)
        s = self.s
        s.frames += 1
        img = np.asarray(frame.data)
        if img.ndim > 2:
            img = img.reshape(img.shape[0], img.shape[1], -1)[..., 0]
        declared = float(frame.pixel_size_A) if frame.pixel_size_A is not None else float("nan")
        h = FrameHealth(declared_pixel_size_A=declared)
        shape = tuple(int(v) for v in img.shape[:2])
        jump = False
        if s.shape is not None and shape != s.shape:
            h.add("fov_jump", f"frame shape changed {s.shape[1]}x{s.shape[0]} -> {shape[1]}x{shape[0]} px "
                              "within the series")
            jump = True
            s.means.clear()
            s.floors.clear()
            s.heavy_A = None
        s.shape = shape
        # non-finite pixels (integer frames have none)
        if np.issubdtype(img.dtype, np.integer):
            g, nf = img, 0.0
        else:
            finite = np.isfinite(img)
            nf = 1.0 - float(np.count_nonzero(finite)) / img.size if img.size else 1.0
            if nf > cfg.max_non_finite_fraction:
                h.add("non_finite", f"{100 * nf:.1f} % of the pixels are NaN or infinite")
                h.pixel_size_A = declared
                return h
            g = img if nf == 0 else np.where(finite, img, np.nanmedian(img))
        # blank: no signal beyond read noise (constant, all zero, dark); judged on 4x4 block means (fine
        # sampling spreads an atom over many noisy pixels; white noise drops 4x), which also give the
        # frame's mean and its row-block profile in one pass
        noise = _noise_sigma(g)
        H4, W4 = (g.shape[0] // 4) * 4, (g.shape[1] // 4) * 4
        if H4 >= 16 and W4 >= 16:
            b = _block4_mean(g[:H4, :W4])
            bnoise = noise / 4.0
        else:
            b = np.asarray(g, np.float64)
            bnoise = noise
        lo, hi = percentiles(b, (1.0, 99.0))
        contrast = float(hi - lo)
        if contrast <= 0 or contrast < cfg.blank_contrast_noise * max(bnoise, 1e-12) and \
                not _signal_in_coarser_blocks(g, noise, cfg.blank_contrast_noise):
            h.add("blank", "no signal above the noise (beam blanked, constant or dark frame)")
            h.pixel_size_A = declared
            return h
        # saturated: many pixels at the frame's maximum (the detector clipped)
        top = g.max()
        sat = float(np.count_nonzero(g == top)) / g.size
        if sat > cfg.max_saturated_fraction:
            h.add("saturated", f"{100 * sat:.1f} % of the pixels sit at the maximum value {float(top):.6g}")
        # dose dip / spike against the recent frames of the series: the mean's change measured against
        # the signal above the detector's dark level (real frames and the simulator's carry a dark
        # offset: a dip to 30 % of the dose moved a 3e4 e/A^2 HAADF frame's mean by 4 % only)
        m = float(b.mean())
        floor = percentile(g[::4, ::4], 0.1)
        if len(s.means) >= 3:
            ref = median(np.fromiter(s.means, np.float64, len(s.means)))
            spread = max(abs(ref - median(np.fromiter(s.floors, np.float64, len(s.floors)))) * cfg.glitch_dose_ratio,
                         1e-12)
            if abs(m - ref) > spread:
                h.add("glitch", f"mean intensity {m:.4g} vs {ref:.4g} in the series' recent frames (dose dip or spike)")
        # scan tear / line jump: a step in the (4-row block) row means far beyond their usual scatter
        rows = b.mean(axis=1)
        d = np.abs(np.diff(rows))
        if len(d) > 8:
            mad = median(np.abs(d - median(d))) * 1.4826 + 1e-12
            big = d > cfg.tear_row_mad * mad
            if big.any() and float(d.max()) > 0.5 * contrast:
                r = int(np.argmax(d))
                h.add("glitch", f"scan tear: the row mean jumps near row {4 * (r + 1)}")
        if "glitch" not in h.verdicts:
            s.means.append(m)
            s.floors.append(floor)
        self._scale(g, declared, h, jump)
        # bounded work: the model grid must stay under the cap; over it, a coarser grid down to
        # coarsest_model_px_A (where the network still resolves the lattice), else not analysed
        ps = h.pixel_size_A
        if np.isfinite(ps) and ps > 0:
            side = max(shape) * ps / self.model_pixel_size_A
            if side > cfg.max_model_px:
                coarse = coarse_model_px_A(shape, ps, self.model_pixel_size_A, cfg.max_model_px,
                                           cfg.coarsest_model_px_A)
                why = (f"{shape[1]}x{shape[0]} px at {ps:.4g} A/px is {side:.0f} model px per side "
                       f"(cap {cfg.max_model_px})")
                if ps > 0.5:
                    why += "; the frame is too coarse to resolve graphene (needs <= 0.5 A/px): not analysed"
                elif coarse is None:
                    why += (f"; even at the coarsest model sampling that resolves the lattice "
                            f"({cfg.coarsest_model_px_A:g} A/px) it would be "
                            f"{max(shape) * ps / cfg.coarsest_model_px_A:.0f}: not analysed")
                else:
                    h.model_pixel_size_A = coarse
                    why += (f"; analysed at a coarser model sampling, {coarse:.4g} A/px "
                            f"({max(shape) * ps / coarse:.0f} model px per side)")
                h.add("too_large", why)
        # scan tear / line jump: a band of rows shifted sideways; candidates from the pixels here, the
        # atoms' bonds confirm one in after()
        if cfg.tear_shift_px > 0 and not ({"glitch", "too_large"} & set(h.verdicts)):
            h.tear_rows = row_shift_candidates(g, h.pixel_size_A, cfg.tear_shift_px, cfg.tear_shift_A)
        return h

    # ------------------------------------------------------------------------------ after
    def after(self, h: FrameHealth, chem, frame_shape, snr: float | None = None,
              area_fraction: float = 1.0) -> FrameHealth:
        """Verdicts from the atoms found (no_lattice, low_snr, fov_jump by the heavy atoms).
        ``area_fraction``: the part of the field that was analysed (the graphene mask's)."""
        cfg, s = self.cfg, self.s
        atoms = chem.atoms
        ps = float(atoms.pixel_size_A)
        area = frame_shape[0] * frame_shape[1] * ps * ps * float(area_fraction)
        expected = area * GRAPHENE_ATOMS_PER_A2
        if expected > 30 and len(atoms) < cfg.min_lattice_fraction * expected:
            h.add("no_lattice", f"{len(atoms)} atoms where graphene would show ~{expected:.0f}")
        if h.tear_rows and "glitch" not in h.verdicts:
            hit = confirm_tear(h.tear_rows, atoms.xy_px, chem.bonds, int(frame_shape[0]), ps, cfg.tear_shift_px,
                               cfg.tear_shift_A)
            if hit is not None:
                row, shift = hit
                h.add("glitch", f"scan tear: the rows from row {row} on are shifted {shift:+.1f} px "
                                f"({shift * ps:+.2f} A) sideways against those above (line jump)")
        if snr is not None:
            h.snr = float(snr)
            if np.isfinite(snr) and snr < cfg.min_snr:
                h.add("low_snr", f"C-atom signal-to-noise ratio {snr:.1f} < {cfg.min_snr:g}: atoms not resolvable")
        # stage move: the heavy atoms (non-periodic, unlike the lattice) must reappear under one shift
        heavy = np.asarray(atoms.species) > 0
        xy = np.asarray(atoms.xy_px, np.float64)[heavy] * ps
        if s.heavy_A is not None and len(s.heavy_A) >= 1 and len(xy) >= 1 and "fov_jump" not in h.verdicts:
            if not _constellation_matches(s.heavy_A, xy, cfg.max_jump_A, cfg.jump_tolerance_A):
                h.add("fov_jump", "the dopants do not reappear under any drift within "
                                  f"{cfg.max_jump_A:g} A (stage move)")
        if h.ok or "fov_jump" in h.verdicts:
            s.heavy_A = xy
        return h

    # ------------------------------------------------------------------------------ ahead
    def may_run_ahead(self, frame) -> bool:
        """Whether :meth:`before` on ``frame`` may run before :meth:`after` of the frame judged last
        and leave both results unchanged (:mod:`engine.overlap` checks the next frame while the
        current one is finished). True unless ``frame`` starts a new series or run, or changes the
        frame shape: then :meth:`before` starts new series state, or forgets the dopant constellation
        that :meth:`after` compares with. :meth:`after` reads nothing else that :meth:`before` writes."""
        s = self.s
        shape = tuple(int(v) for v in np.shape(frame.data)[:2])
        return (s.shape is not None and frame.series == s.name and int(getattr(frame, "run", 0)) == s.run
                and shape == s.shape)


#: One frame's estimate alone is used (until a second frame confirms it) only when its rings stand out
#: this clearly.
SOLO_STRENGTH = 1.4


def _consensus(found: list) -> tuple[ScaleEstimate | None, int]:
    """The series' estimate and how many frames agree on it: two or more frames agreeing within 3 %
    (their median), else the clearest frame with strength >= SOLO_STRENGTH."""
    if not found:
        return None, 0
    p = np.array([e.pixel_size_A for e in found])
    agree = np.abs(p[:, None] / p[None, :] - 1.0) <= 0.03
    k = int(np.argmax(agree.sum(1)))
    members = [e for e, a in zip(found, agree[k]) if a]
    if len(members) >= 2:
        ps = float(np.median([e.pixel_size_A for e in members]))
        unc = float(np.sqrt(np.mean([e.uncertainty_A ** 2 for e in members])))
        return ScaleEstimate(ps, unc, float(max(e.strength for e in members)), sum(e.n_spots for e in members),
                             True), len(members)
    solo = [e for e in found if e.strength >= SOLO_STRENGTH]
    return (max(solo, key=lambda e: e.strength), 1) if solo else (None, 0)


def coarse_model_px_A(shape, pixel_size_A: float, model_px_A: float, max_model_px: int,
                      coarsest_A: float) -> float | None:
    """The model sampling (A/px) that brings a frame's model grid to at most ``max_model_px`` per side:
    ``model_px_A`` when it already fits, a coarser one up to ``coarsest_A``, else None (skip)."""
    need = max(shape) * float(pixel_size_A) / float(max_model_px)
    if need <= model_px_A:
        return float(model_px_A)
    need *= 1.0 + 1e-9                      # grid_shape rounds: stay at or under the cap
    return float(need) if need <= coarsest_A else None


def _noise_sigma(img: np.ndarray) -> float:
    """Pixel noise from differences of horizontal neighbours (robust: MAD), on every 8th row."""
    rows = np.asarray(img)[::8, :]
    if np.issubdtype(rows.dtype, np.integer) and rows.dtype.itemsize <= 2 and rows.size:
        return _noise_sigma_int(rows)
    a = np.asarray(rows, np.float64)                 # (integer frames: no wrap-around in the differences)
    d = np.diff(a, axis=1).ravel()
    if not len(d):
        return 0.0
    return median(np.abs(d - median(d))) * 1.4826 / np.sqrt(2.0)


def _noise_sigma_int(rows: np.ndarray) -> float:
    """:func:`_noise_sigma` of 8/16-bit rows: the differences are integers, so both medians come from
    one histogram (``np.bincount``) instead of two partitions of ~10^4-10^5 values; the same number."""
    d = np.diff(rows.astype(np.int32), axis=1).ravel()
    if not len(d):
        return 0.0
    lo = int(d.min())
    counts = np.bincount(d - lo)
    med = _hist_median(counts) + lo                   # a multiple of 0.5
    # |d - med| on the doubled scale (integers): 2|d - med| = |2 d - 2 med|
    m2 = int(round(2 * med))
    dev = np.abs(2 * (np.arange(len(counts)) + lo) - m2)
    mad2 = _hist_median(np.bincount(dev, weights=counts).astype(np.int64))
    return float(mad2 / 2.0) * 1.4826 / np.sqrt(2.0)


#: block sides (px) the blank test tries after 4 x 4: at fine sampling an atom spreads over a probe of
#: ~25 px (0.04 A/px), and 4 x 4 block means left resolvable graphene (C-atom SNR 3-7, 0.03-0.06 A/px,
#: 1e4-1e5 e/A^2) "blank"; each size needs this many blocks a side (stable 1st / 99th percentiles)
BLANK_BLOCKS = (8, 16)
BLANK_MIN_BLOCKS = 32


def _signal_in_coarser_blocks(g: np.ndarray, noise: float, k_noise: float) -> bool:
    """Whether block means of :data:`BLANK_BLOCKS` px show a 1-99 percentile range of at least
    ``k_noise`` x their white-noise level (``noise / side``): signal the 4 x 4 test missed."""
    from engine.chem.filters import block_mean

    for k in BLANK_BLOCKS:
        H, W = (np.shape(g)[0] // k) * k, (np.shape(g)[1] // k) * k
        if min(H, W) // k < BLANK_MIN_BLOCKS:
            break
        lo, hi = percentiles(block_mean(np.asarray(g)[:H, :W], k), (1.0, 99.0))
        if float(hi - lo) >= k_noise * max(noise / k, 1e-12):
            return True
    return False


def _hist_median(counts: np.ndarray) -> float:
    """The median (numpy's: the mean of the two middle values for an even count) of the values
    ``0, 1, 2, ...`` present ``counts`` times."""
    n = int(counts.sum())
    c = np.cumsum(counts)
    lo = int(np.searchsorted(c, (n - 1) // 2, side="right"))     # the value at sorted index (n-1)//2
    hi = int(np.searchsorted(c, n // 2, side="right"))           # ... and at n//2
    return (lo + hi) / 2.0


def _block4_mean(a: np.ndarray) -> np.ndarray:
    """Means of the 4x4 blocks of ``a`` (sides multiples of 4) in float64: ``a.reshape(H/4, 4, W/4,
    4).mean(axis=(1, 3), dtype=np.float64)``; 8/16-bit frames by strided integer sums (exact: the
    same numbers, several times faster), others that way."""
    H, W = a.shape
    if not (np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize <= 2):
        return a.reshape(H // 4, 4, W // 4, 4).mean(axis=(1, 3), dtype=np.float64)
    c = np.add(a[:, 0::4], a[:, 1::4], dtype=np.int32)
    c += a[:, 2::4]
    c += a[:, 3::4]
    r = c[0::4] + c[1::4]
    r += c[2::4]
    r += c[3::4]
    return r / 16.0


def _constellation_matches(prev_A: np.ndarray, cur_A: np.ndarray, max_shift_A: float, tol_A: float) -> bool:
    """True when some shift within ``max_shift_A`` brings at least half of the smaller set of heavy
    atoms within ``tol_A`` of the other set (candidate shifts: every pair difference)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(cur_A)
    # candidate shifts: every (cur, prev) difference within max_shift_A, in (cur, prev) order; pairs
    # from a KD-tree, not all len(cur) x len(prev) differences
    lists = cKDTree(prev_A).query_ball_point(cur_A, max_shift_A * (1 + 1e-9) + 1e-12)
    cnt = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    ci = np.repeat(np.arange(len(cur_A)), cnt)
    pj = np.fromiter((k for x in lists for k in x), np.int64, int(cnt.sum()))
    order = np.lexsort((pj, ci))
    d = cur_A[ci[order]] - prev_A[pj[order]]
    d = d[np.hypot(d[:, 0], d[:, 1]) <= max_shift_A]
    if not len(d):
        return False
    need = max(1, int(np.ceil(0.5 * min(len(prev_A), len(cur_A)))))
    for shift in d[:400]:
        hit, _ = tree.query(prev_A + shift, distance_upper_bound=tol_A)
        if int(np.isfinite(hit).sum()) >= need:
            return True
    return False
