"""Random samples and single training examples drawn over the simulator's full ranges."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from engine.sim import structures as st
from engine.sim.imaging import ImagingParams, render


def contamination_mask(species: np.ndarray, lattice: np.ndarray | None) -> np.ndarray:
    """True for contamination atoms: light (C-like) atoms that are not part of the lattice."""
    species = np.asarray(species)
    if lattice is None:
        return np.zeros(len(species), bool)
    return (~np.asarray(lattice, bool)) & (species != 2)


@dataclass
class TrainingExample:
    """One simulated frame with exact atom positions.

    image : (H, W) float32 detector counts; xy_px : (N, 2) (x=col, y=row) of every atom that
    appears (atoms up to a few A outside the field included); species : (N,) int8 codes
    (0 C, 1 Si, 2 other heavy); lattice : (N,) bool (False for contamination/adatoms);
    pixel_size_A : A per pixel; params : imaging and structure parameters (JSON-able dict).
    """

    image: np.ndarray
    xy_px: np.ndarray
    species: np.ndarray
    lattice: np.ndarray
    z: np.ndarray
    pixel_size_A: float
    params: dict = field(default_factory=dict)


def random_sample(rng: np.random.Generator, fov_A: tuple[float, float], *, si_per_nm2: float | None = None,
                  defects: bool = True, holes: bool | None = None, contamination: bool | None = None,
                  adatoms: bool | None = None, margin_A: float = 3.0, thermal_jitter_A: float = 0.05,
                  distort: bool | None = None) -> st.Sample:
    """A graphene sheet over ``[-margin, fov + margin]`` with randomly placed dopants and defects.

    si_per_nm2 : Si dopant density (default: drawn in [0.02, 0.6] /nm^2; at least one Si).
    holes / contamination / adatoms : force on/off (default: random, in ~25/30/30 % of samples).
    margin_A : lattice beyond the field (atoms outside still light the edges through the probe).
    thermal_jitter_A : std of the random displacement of every atom (A).
    distort : lattice strain and ripples (:func:`distort_lattice`); default: random, in 60 % of samples.
    """
    w, h = fov_A
    s = st.graphene(fov_A, rotation_deg=float(rng.uniform(0, 60)), rng=rng, margin_A=margin_A)
    area_nm2 = w * h / 100.0
    dens = si_per_nm2 if si_per_nm2 is not None else float(rng.uniform(0.02, 0.6))
    n_sites = max(1, rng.poisson(dens * area_nm2))
    kinds = ["si3", "si4", "dimer", "cluster3", "cluster4", "vacancy", "585", "stone_wales"] if defects else ["si3"]
    probs = np.array([0.45, 0.2, 0.1, 0.05, 0.03, 0.07, 0.05, 0.05])[: len(kinds)]
    probs = probs / probs.sum()
    taken = np.zeros((0, 2))
    for _ in range(n_sites):
        for _try in range(10):
            p = rng.uniform([1.0, 1.0], [w - 1.0, h - 1.0])
            if len(taken) == 0 or np.hypot(*(taken - p).T).min() > 6.0:
                break
        else:
            continue
        taken = np.vstack([taken, p])
        kind = kinds[rng.choice(len(kinds), p=probs)]
        try:
            aid = s.nearest(p)
        except ValueError:
            continue
        st.SITE_DEFECTS[kind](s, aid)
    if holes if holes is not None else rng.uniform() < 0.25:
        st.add_hole(s, rng.uniform([0, 0], [w, h]), float(rng.uniform(3, 10)), rng)
    if contamination if contamination is not None else rng.uniform() < 0.3:
        for _ in range(rng.integers(1, 3)):
            st.add_contamination(s, rng.uniform([0, 0], [w, h]), float(rng.uniform(3, 15)), rng,
                                 density_per_A2=float(np.exp(rng.uniform(np.log(0.1), np.log(1.5)))))
    if adatoms if adatoms is not None else rng.uniform() < 0.3:
        for _ in range(rng.integers(1, 4)):
            st.add_adatom(s, st.hollow_site(s, rng.uniform([0, 0], [w, h])), z=int(rng.choice([26, 29, 42, 74, 79])))
    if distort if distort is not None else rng.uniform() < 0.6:
        distort_lattice(s, rng, centre_A=(w / 2, h / 2))
    s.xy_A += rng.normal(0, thermal_jitter_A, s.xy_A.shape)
    return s


def distort_lattice(sample: st.Sample, rng: np.random.Generator, centre_A=(0.0, 0.0), strain_std: float = 0.01,
                    ripple_max_A: float = 0.12, ripple_wavelength_A: tuple = (8.0, 30.0)) -> None:
    """Distort every atom's position in place like a real, slightly strained and rippled sheet.

    A homogeneous strain (symmetric 2x2 tensor, components N(0, ``strain_std``): also covers a
    pixel-size calibration error of ~1 %) about ``centre_A``, plus 1-2 in-plane ripple waves
    (projected displacement of a corrugated membrane) with amplitude U(0, ``ripple_max_A``) A and
    wavelength U(``ripple_wavelength_A``). Bonds change by at most a few hundredths of an A, so
    coordination is unchanged.
    """
    e = rng.normal(0.0, strain_std, 3)
    eps = np.array([[e[0], e[2]], [e[2], e[1]]])
    c = np.asarray(centre_A, float)
    xy = sample.xy_A
    disp = (xy - c) @ eps.T
    for _ in range(int(rng.integers(1, 3))):
        k_dir = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / rng.uniform(*ripple_wavelength_A) * np.array([np.cos(k_dir), np.sin(k_dir)])
        pol = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0, ripple_max_A)
        phase = xy @ k + rng.uniform(0, 2 * np.pi)
        disp += amp * np.sin(phase)[:, None] * np.array([np.cos(pol), np.sin(pol)])[None, :]
    sample.xy_A = xy + disp


def make_training_example(rng: np.random.Generator, shape_px: tuple[int, int] = (256, 256),
                          pixel_size_A: float | None = None, dose_range=(1e3, 1e6),
                          params: ImagingParams | None = None, **overrides) -> TrainingExample:
    """Draw a random sample and image it over the full simulator ranges.

    pixel_size_A : default log-uniform in [0.05, 0.2] A/px; dose_range : e/A^2 (log-uniform);
    params : fixed imaging parameters instead of random ones. Other keywords: any
    :class:`ImagingParams` field (fixes that parameter, e.g. ``gamma=1.7``), or a keyword of
    :func:`random_sample` (``si_per_nm2``, ``holes``, ``contamination``, ``adatoms``, ``defects``,
    ``thermal_jitter_A``). Atoms up to 3 A outside the field are included in the truth (the sample
    extends further, so the probe tail lights the edges realistically). Deterministic for a given
    ``rng`` state.
    """
    names = {f.name for f in fields(ImagingParams)}
    img_over = {k: v for k, v in overrides.items() if k in names}
    smp_over = {k: v for k, v in overrides.items() if k not in names}
    if pixel_size_A is None:
        pixel_size_A = float(np.exp(rng.uniform(np.log(0.05), np.log(0.2))))
    h, w = shape_px
    fov = (w * pixel_size_A, h * pixel_size_A)
    if params is not None:
        ip = params
        if img_over:
            ip = ImagingParams.from_dict({**params.to_dict(), **img_over})
    else:
        ip = ImagingParams.random(rng, dose_range, **img_over)
    margin = max(3.0, 1.4 * ip.tail_fwhm_A if ip.tail_fraction > 0 else 3.0, 2.0 * ip.probe_fwhm_A)
    sample = random_sample(rng, fov, margin_A=margin, **smp_over)
    image, xy = render(sample, ip, shape_px, pixel_size_A, rng)
    m = 3.0 / pixel_size_A
    keep = (xy[:, 0] > -m) & (xy[:, 0] < w - 1 + m) & (xy[:, 1] > -m) & (xy[:, 1] < h - 1 + m)
    return TrainingExample(image, xy[keep], sample.species[keep].copy(), sample.lattice[keep].copy(),
                           sample.z[keep].copy(), float(pixel_size_A),
                           {"imaging": ip.to_dict(), "defects": [d["kind"] for d in sample.defects],
                            "n_atoms": int(keep.sum())})
