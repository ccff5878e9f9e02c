"""One typed configuration object for the whole analyzer.

Every quantity carries its unit in its name (``_A`` for angstrom, ``_s`` for seconds, ``_px`` for
pixels of the input frame). Sections are plain frozen dataclasses so that a configuration can be
logged, compared and written to JSON (:func:`to_dict`).

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
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StreamConfig:
    """Receiver and recorder settings (issue: streamer)."""

    max_frame_bytes: int = 2048 * 2048 * 8          # largest accepted pixel buffer
    max_frame_side_px: int = 8192                    # largest accepted frame side
    rcvhwm: int = 1000                               # ZeroMQ receive high-water mark (messages)
    recorder_queue_frames: int = 256                 # bounded queue between receiver and recorder
    stall_timeout_s: float = 5.0                     # no frame for this long while a series is open
    poll_interval_s: float = 0.05                    # I/O thread poll period
    recorder_queue_bytes: int = 1 << 30              # the recorder queue also holds at most this many bytes
    max_gaps_kept: int = 1000                        # most recent seq gaps listed in stats (all are counted)
    recorder_policy: str = "drop"                    # queue full: "drop" (count it, never slow the
                                                     # socket) or "block" (lossless: back-pressure a PUSH sender)


@dataclass(frozen=True)
class InferenceConfig:
    """Network inference settings (issue: inference)."""

    backend: str = "auto"                            # auto | tensorrt | onnx
    model_path: str | None = None                    # None: the model shipped in engine/models
    precision: str = "fp32"                          # fp32 | fp16 (TensorRT only)
    tile_px: int = 1024                              # frames larger than this (model pixels) are tiled
    tile_overlap_px: int = 32                        # overlap between tiles (model pixels)
    threads: int | None = None                       # CPU threads; None = physical cores
    engine_cache_dir: str | None = None              # TensorRT engine cache; None = user cache dir


@dataclass(frozen=True)
class ChemistryConfig:
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


@dataclass(frozen=True)
class TrackingConfig:
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


@dataclass(frozen=True)
class EventConfig:
    """Debounced event state machines (issue: tracking)."""

    k_of_n: tuple = (3, 4)                           # a new state must hold k of the last n frames
                                                     # (k >= 2: a one-frame flicker never changes a state)
    min_confidence: float = 0.5                      # events below this confidence are not raised
    rotor_min_deg: float = 45.0                      # a "rotor" event needs the defect's orientation to
                                                     # turn by more than this (engine/track/orientation.py)


@dataclass(frozen=True)
class DashboardConfig:
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
class Config:
    """The whole configuration. Build with defaults and override with :meth:`replace`."""

    stream: StreamConfig = field(default_factory=StreamConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    chemistry: ChemistryConfig = field(default_factory=ChemistryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    events: EventConfig = field(default_factory=EventConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """Return a copy with the given fields of the given sections replaced.

        ``cfg.replace(chemistry={"prob_threshold": 0.4})``; unknown sections or fields raise
        ``TypeError`` naming them.
        """
        changes = {}
        for name, values in sections.items():
            if not hasattr(self, name):
                raise TypeError(f"unknown configuration section {name!r}")
            changes[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy of the configuration."""
        return dataclasses.asdict(self)
