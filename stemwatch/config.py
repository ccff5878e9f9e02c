"""One typed configuration object for the whole analyzer.

Every quantity carries its unit in its name (``_A`` for angstrom, ``_s`` for seconds, ``_px`` for
pixels of the input frame). Sections are frozen dataclasses so that a configuration can be logged,
compared and written to JSON (:func:`to_dict`). They protect themselves
(:mod:`stemwatch.config_check`): values are checked and coerced when a section is built (JSON
types, ranges; the message names the field and its unit), mappings are read-only, options are
``Literal``. ``stemwatch config --show`` prints the effective configuration.

Example
-------
>>> from stemwatch.config import Config
>>> cfg = Config()
>>> cfg.chemistry.bond_cutoff_A["Si-C"]
2.1
>>> cfg2 = cfg.replace(tracking={"max_speed_A_per_frame": 3.0})
>>> cfg2.tracking.max_speed_A_per_frame
3.0
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from stemwatch.config_check import SECTION_NAMES, ConfigError, Section, choices, plain  # noqa: F401 (choices)

__all__ = ["Config", "ConfigError", "StreamConfig", "InferenceConfig", "ChemistryConfig", "TrackingConfig",
           "EventConfig", "DashboardConfig", "HealthConfig", "PipelineConfig", "load_config", "choices"]


@dataclass(frozen=True)
class StreamConfig(Section):
    """Receiver and recorder settings (issue: streamer)."""

    max_frame_bytes: int = 2048 * 2048 * 8          # largest accepted pixel buffer
    max_frame_side_px: int = 8192                    # largest accepted frame side
    rcvhwm: int = 1000                               # ZeroMQ receive high-water mark (messages)
    recorder_queue_frames: int = 256                 # bounded queue between receiver and recorder
    stall_timeout_s: float = 5.0                     # no frame for this long while a series is open
    poll_interval_s: float = 0.05                    # I/O thread poll period
    recorder_queue_bytes: int = 1 << 30              # the recorder queue also holds at most this many bytes
    max_gaps_kept: int = 1000                        # most recent seq gaps listed in stats (all are counted)
    recorder_policy: Literal["drop", "block"] = "drop"  # queue full: "drop" (count it, never slow the
                                                     # socket) or "block" (lossless: back-pressure a PUSH sender)
    recorder_max_buffer_bytes: int = 1 << 30         # "block" (lossless) mode: the most message bytes the
                                                     # recorder path holds (its queue + libzmq's receive
                                                     # queue); beyond it the sender is slowed (docs/recording.md)


@dataclass(frozen=True)
class InferenceConfig(Section):
    """Network inference settings (issue: inference)."""

    backend: Literal["auto", "tensorrt", "onnx"] = "auto"
    model_path: str | None = None                    # None: the model shipped in engine/models
    precision: Literal["fp32", "fp16"] = "fp32"      # TensorRT only
    tile_px: int = 1024                              # frames larger than this (model pixels) are tiled
    tile_overlap_px: int = 32                        # overlap between tiles (model pixels)
    threads: int | None = None                       # CPU threads; None = physical cores
    engine_cache_dir: str | None = None              # TensorRT engine cache; None = user cache dir
    cpu_precision: Literal["auto", "fp32", "int8"] = "auto"  # ONNX Runtime CPU: FP32 reference or the INT8
                                                     # <model>_int8.onnx; auto: INT8 on CPUs with VNNI (engine/infer/
                                                     # cpu_precision.py); TensorRT never uses INT8
    int8_fp32_fallback: bool = True                  # INT8: rerun a marginal map (undecided, or a Si share
                                                     # near 0.5) with the FP32 reference (engine/infer/fallback.py)
    cpu_spin_wait: bool = False                      # ONNX Runtime CPU: pool threads spin-wait between
                                                     # operators (issue 20: off, they burn the core the
                                                     # chemistry needs on 2 shared cores; docs/tracking.md)


@dataclass(frozen=True)
class ChemistryConfig(Section):
    """Atom finding and lattice graph settings (issue: chemistry).

    Default bond cutoffs sit midway between the first-neighbour shells and the next ones
    (C-C 1.90, Si-C 2.10 with an adaptive 1.95-2.35 A shell break, Si-Si 2.50 A; LibraryNet used
    1.75 / 2.10 / 2.50), see docs/chemistry.md.
    """

    prob_threshold: float = 0.5                      # an atom site needs P(atom) above this
    min_atom_separation_A: float = 0.85              # ~0.6 x C-C bond: closer peaks are one atom
    heavy_separation_A: float = 1.2                  # nothing closer than this to a Si / heavy atom (a bright
                                                     # blob's flank can give a second peak); 0: off
    bond_cutoff_A: dict = field(default_factory=lambda: {"C-C": 1.90, "Si-C": 2.10, "Si-Si": 2.50})
                                                     # pairs with "other" use the Si cutoffs unless given
                                                     # ("other-C", "other-Si", "other-other")
    border_A: float = 1.0                            # atoms closer than this to the edge are flagged
    refine_gaussian: bool = False                    # optional 2D Gaussian refinement on the raw frame
    motif_radius_bonds: int = 2                      # graph radius of a local-environment signature
    motif_names_path: str | None = None              # JSON file of operator-given motif names
    site_radius_A: float = 0.65                      # window radius of the probability-weighted centroid
    max_coordination: dict = field(default_factory=lambda: {"C": 3, "Si": 4, "other": 6})  # longest bonds
                                                     # beyond this many are dropped (LibraryNet keeps 4 for Si)
    calibrate_scale: bool = True                     # rescale bond cutoffs by median C-C / 1.42 A (within
                                                     # +-15 %) so a mis-calibrated pixel size does not break bonds
    edge_margin_A: float = 3.0                       # atoms this close to the frame edge are not judged
                                                     # for missing neighbours (their bonds may leave the frame)
    other_intensity_ratio: float = 1.8               # with a raw frame: an atom is "other" (heavier than Si)
                                                     # when its intensity over background exceeds this x the
                                                     # Si level (median of Si-like atoms, else (14/6)^2 x C)
    refine_window_A: float = 0.6                     # half-size of the 2D Gaussian refinement window
    si_c_shell_A: tuple = (1.95, 2.35)               # Si/heavy-C pairs below the first are bonded, above the
                                                     # second not, in between at the widest gap of that atom's
                                                     # sorted C distances (shell break); () : fixed cutoffs
    dangling_bond_A: float = 2.2                     # two C that each miss a neighbour and are closer than
                                                     # this are bonded (a reconstructed 5-8-5 pair); 0: off
    min_si_relative_intensity: float = 0.5           # with a raw frame and >= 2 Si: a "Si" dimmer than this x
                                                     # the frame's 75th-percentile Si is a C; 0: off
    min_intensity_ratio: float = 0.35                # with a raw frame: atoms whose contrast over the local
                                                     # background is below this x the median C atom's are
                                                     # dropped (the network "filled in" a vacancy); 0: off
    overlayer_excess: float = 2.5                    # with a raw frame: >= overlayer_min_atoms atoms (within
    overlayer_min_atoms: int = 10                    # 4 A of each other) whose 3 A surroundings are brighter
                                                     # than the frame's typical atom's by this many C contrasts
                                                     # form a contamination region (an overlayer), unless a
                                                     # heavy "other" atom lies within 3 A; 0: off
    material_check: bool = True                      # a material verdict per frame (engine.health.material):
                                                     # frames that are not graphene are not analysed (no
                                                     # atoms, no events); a partly-graphene field only where
                                                     # it is graphene
    vacuum_min_dip: float = 0.5                      # with a raw frame: an atom whose 2-4 A surroundings dip
                                                     # below the lattice level by more than this x the lattice's
                                                     # own contrast (and 5 noise sigma) is in a hole and is
                                                     # dropped (engine.chem.vacuum); 0: off
    vacuum_own_sigma: float = 2.0                    # ... unless its own contrast over its surroundings
                                                     # exceeds this many noise sigma of the frame
    vacuum_dark_sigma: float = 1.0                   # with a raw frame: an atom near vacuum (dip > 0.15) at which
                                                     # the frame (probe-matched) lies below the lattice level by
                                                     # this many noise sigma and by a typical atom's rise over it
                                                     # is dropped (the lattice continued into a hole); 0: off
    material_recheck_every_n_frames: int = 20        # the full material check runs on a series' first frame,
                                                     # on a jump, a pixel-size change, when a cheap per-frame
                                                     # guard sees the spectrum change, and at least this
                                                     # often; 1: every frame (engine.health.material_cadence)


@dataclass(frozen=True)
class TrackingConfig(Section):
    """Drift correction and tracker settings (issue: tracking)."""

    max_speed_A_per_frame: float = 0.7               # gate radius after drift correction
    max_drift_A_per_frame: float = 2.5               # largest global shift searched
    memory_frames: int = 3                           # a missed atom is kept this many frames; a
                                                     # confirmed track missed this many in a row ends
    confirm_frames: int = 2                          # a new track counts after this many hits
    process_noise_A: float = 0.05                    # Kalman process noise (thermal jitter)
    measurement_noise_A: float = 0.08                # Kalman measurement noise (localisation)
    hop_radius_A: float = 3.6                        # a heavy atom (Si) may jump this far (a bond exchange,
                                                     # 1.4 A; a Si3 rotor step, ~3.4 A)
    hop_min_A: float = 1.0                           # a heavy atom this far from its site has hopped
    hop_cost: float = 0.25                           # cost of a hop, fraction of birth+death, x (0.8 + 0.2 d/hop_radius)
    pivot_hop_cost: float = 0.15                     # extra hop cost of a heavy atom bonded to 2+ heavy atoms
    heavy_mismatch_cost: float = 0.2                 # cost of Si <-> other (an intensity call), fraction
    species_mismatch_cost: float = 0.8               # cost of a species change, fraction of birth+death
    tentative_cost: float = 0.3                      # extra cost of matching a not yet confirmed track
    light_hops: bool = True                          # left-over C tracks may follow a C one bond away
                                                     # (Si-C site exchange), as a second matching pass
    drift_tolerance_A: float = 0.4                   # an atom matches under a candidate drift within this
    env_radius_A: float = 2.5                        # neighbours of a heavy atom (longest bond cutoff)
    edge_exclusion_A: float = 3.0                    # no environment events (coordination, dimer,
                                                     # formula) for atoms this close to the field edge
    edge_unobservable_A: float = 0.5                 # a track predicted this close to (or beyond) the
                                                     # edge is not counted as missed
    park_forget_A: float = 40.0                      # tracks that drifted out are parked (an atom coming
    park_forget_frames: int = 2000                   # back gets its id back) until this far outside or
                                                     # this many frames old
    border_margin_A: float = 1.5                     # tracks ending this close to the field edge "left"
    history_frames: int = 32                         # per-track raw species/coordination ring length
    rejoin_min_confidence: float = 0.998             # a detection less sure than this and than 99 % of
                                                     # its frame's atoms, on a track missed in the frame
                                                     # before, counts as one more miss (once per run): at
                                                     # low dose the network "sees" an atom on a freshly
                                                     # emptied site for a frame (confidence 0.96-0.996)


@dataclass(frozen=True)
class EventConfig(Section):
    """Debounced event state machines (issue: tracking)."""

    k_of_n: tuple = (3, 4)                           # a new state must hold k of the last n frames
                                                     # (k >= 2: a one-frame flicker never changes a state)
    min_confidence: float = 0.5                      # events below this confidence are not raised
    rotor_min_deg: float = 45.0                      # a "rotor" event needs the defect's orientation to
                                                     # turn by more than this (engine/track/orientation.py)
    calibrate_confidence: bool = True                # report the calibrated probability that the event is
                                                     # right (engine/health/confidence.py), not the raw
                                                     # window support x detection confidence


@dataclass(frozen=True)
class DashboardConfig(Section):
    """Bokeh operator screen (issue: dashboard)."""

    port: int = 5006
    address: str = "127.0.0.1"                       # localhost unless explicitly opened
    allow_origins: tuple = ()                         # extra websocket origins
    history_frames: int = 200                        # ring buffer browsable with the slider
    max_update_bytes: int = 1_000_000                # one frame update to a browser stays under this
    max_events: int = 1000                           # events kept in the log table
    max_event_frames: int = 64                       # frames of recent events kept after leaving the ring
    display_period_s: float = 0.05                   # fastest image update per browser tab (20 Hz)
    status_period_s: float = 0.5                     # status panel / timeline refresh period
    ack_timeout_s: float = 2.0                       # a tab that has not shown the last frame this long
                                                     # is sent the next one anyway (slow-browser guard)


@dataclass(frozen=True)
class HealthConfig(Section):
    """Frame health verdicts and the pixel size from the lattice (issue 13, engine/health)."""

    scale: str = "auto"                              # auto | declared | a pixel size in A/px (override);
                                                     # auto: the declared size unless the graphene lattice
                                                     # disagrees by more than scale_tolerance
    scale_tolerance: float = 0.05                    # relative disagreement that makes auto use the lattice
    scale_recheck_frames: int = 50                   # re-estimate the lattice pixel size every this many frames
    scale_attempt_frames: int = 10                   # try every frame until a lattice is found, this long
    max_model_px: int = 4096                         # largest model-grid side; larger frames are too_large
    max_non_finite_fraction: float = 0.01            # more NaN/inf pixels than this: non_finite
    blank_contrast_noise: float = 6.0                # 1-99 percentile range below this x pixel noise: blank
    max_saturated_fraction: float = 0.02             # more pixels at the maximum value than this: saturated
    glitch_dose_ratio: float = 0.3                   # mean above the dark level off the recent median by this fraction
    tear_row_mad: float = 25.0                       # a row-mean step this many MADs above the typical: tear
    min_lattice_fraction: float = 0.2                # fewer atoms than this x graphene's density: no_lattice
    min_snr: float = 2.0                             # estimated C-atom SNR below this: low_snr
    max_jump_A: float = 5.0                          # dopants must reappear within this shift, else fov_jump
    jump_tolerance_A: float = 0.7                    # ... to within this distance
    edge_drop_A: float = 0.3                         # atoms this close to the border are not reported (a blob
                                                     # cut by the edge pulls its centroid inside)
    coarsest_model_px_A: float = 0.22                # a too_large frame is analysed on a coarser model grid
                                                     # (<= max_model_px per side) down to this sampling, where
                                                     # the network still resolves the lattice (it was trained
                                                     # at 0.18-0.224 A/px; lab/health/coarse_eval.py), else
                                                     # skipped
    tear_shift_px: float = 1.6                       # scan tear / line jump: rows shifted sideways by at least
    tear_shift_A: float = 0.15                       # this many px and A against the rows above, confirmed by
                                                     # the bonds crossing there (engine/health/tear.py); 0: off


@dataclass(frozen=True)
class PipelineConfig(Section):
    """How frames flow through the analysis (issue 20, engine/overlap.py)."""

    overlap: Literal["auto", "on", "off"] = "auto"   # run the network of frame n+1 on its own thread while
                                                     # frame n's atoms, graph and tracks are computed (same
                                                     # results); auto: on when 2 or more CPUs are usable
    network_process: Literal["auto", "off"] = "auto"  # with the overlap on the CPU backend, small model grids
                                                     # run the network in a process of its own (no GIL
                                                     # shared with the chemistry: engine/infer/process.py)


@dataclass(frozen=True)
class Config:
    """The whole configuration. Build with defaults and override with :meth:`replace`."""

    stream: StreamConfig = field(default_factory=StreamConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    chemistry: ChemistryConfig = field(default_factory=ChemistryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    events: EventConfig = field(default_factory=EventConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            cls = _section_types()[f.name]
            if isinstance(value, Mapping):
                value = _section(cls, f.name, value)
            elif not isinstance(value, cls):
                raise ConfigError(f"{f.name}: expected a {cls.__name__} or a mapping of its fields, "
                                  f"got {type(value).__name__}")
            object.__setattr__(self, f.name, value)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """Return a copy with the given fields of the given sections replaced (validated, frozen).

        ``cfg.replace(chemistry={"prob_threshold": 0.4})``; unknown sections or fields raise
        :class:`ConfigError` (a ``TypeError`` and a ``ValueError``) naming them.
        """
        changes = {}
        for name, values in sections.items():
            if name not in _section_types():
                raise ConfigError(f"unknown configuration section {name!r} (sections: {', '.join(_section_types())})")
            if not isinstance(values, Mapping):
                raise ConfigError(f"{name}: expected a mapping of fields, got {type(values).__name__}")
            current = getattr(self, name)
            changes[name] = _section(type(current), name, {**current.to_dict(), **values})
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy of the configuration."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, sections: Mapping) -> "Config":
        """A configuration from a JSON-like mapping of sections (each a mapping of fields; all optional)."""
        if not isinstance(sections, Mapping):
            raise ConfigError(f"expected a JSON object of sections, got {type(sections).__name__}")
        return cls().replace(**dict(sections))

    def __reduce__(self):
        return (Config.from_dict, (self.to_dict(),))


@functools.cache
def _section_types() -> dict[str, type]:
    """Section name -> section class, from :class:`Config`'s fields (a section added there is known)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


SECTION_NAMES.update({cls: name for name, cls in _section_types().items()})


def _section(cls, name: str, values: Mapping):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown field(s) {', '.join(map(repr, unknown))} (fields: {', '.join(sorted(known))})")
    return cls(**values)


def load_config(path=None, base: Config | None = None) -> Config:
    """``base`` (default: the defaults) with the overrides of the JSON file ``path`` (sections of fields,
    e.g. ``{"tracking": {"memory_frames": 4}}``). Raises :class:`ConfigError` with one clear line
    for a missing or malformed file or a bad value."""
    cfg = base or Config()
    if path is None:
        return cfg
    try:
        with open(path) as fh:
            overrides = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: expected a JSON object of sections, got {type(overrides).__name__}")
    try:
        return cfg.replace(**overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
