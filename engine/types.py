"""Plain-data interfaces between the engine's stages.

Flow: ``Frame`` (streamer) -> ``Probabilities`` -> ``Atoms`` -> ``Chemistry`` -> track ids ->
``Event`` list, gathered per frame in ``FrameResult``.

Conventions used everywhere:

* positions are ``(x, y)`` with ``x`` = column and ``y`` = row, in pixels of the *input frame*
  (sub-pixel, pixel centres at integer coordinates); ``*_A`` arrays are the same in angstrom;
* arrays are numpy, one row per atom; species are small integer codes (:data:`SPECIES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Network output classes, in channel order.
CLASSES: tuple[str, ...] = ("background", "C", "Si")
#: Species codes used in ``Atoms.species``. ``other`` is a heavy atom that is neither C nor Si.
SPECIES: tuple[str, ...] = ("C", "Si", "other")
C, SI, OTHER = 0, 1, 2

#: Event kinds, shared by the simulator's ground truth and the tracker's detections.
#: ("flicker" appears only in ground truth: a one-frame dim Si that must NOT raise an event.)
EVENT_KINDS: tuple[str, ...] = (
    "si_3_to_4",        # Si 3-fold -> 4-fold (a neighbouring C ejected / Si into a divacancy)
    "si_4_to_3",        # Si 4-fold -> 3-fold
    "si_appeared",      # a Si track appears (entered the field or a new dopant)
    "si_lost",          # a Si track ends (ejected or left the field)
    "si_hop",           # Si hops to a neighbouring lattice site
    "dimer_formed",     # two Si become bonded
    "dimer_broken",     # two bonded Si separate
    "formula_changed",  # a defect group's formula changes (e.g. Si1C3 -> Si2C6)
    "rotor",            # a defect group rotates in place
    "vacancy_created",  # a C atom ejected from the lattice
    "new_motif",        # a local environment never seen before
    "fov_jump",         # bookkeeping: the field of view jumped (stage move, new shape); tracks were reset
    "tracks_reset",     # bookkeeping: many tracks lost at once (the tracker lost the field)
)
GT_ONLY_KINDS: tuple[str, ...] = ("flicker",)


@dataclass
class Probabilities:
    """Per-pixel class probabilities for one frame, on the analysis (model) grid.

    The network runs on a grid of ``pixel_size_A`` (the model's pixel size); the frame was
    resampled to it so that the grid covers exactly the frame's field of view.

    p : float32 array (3, h, w) in :data:`CLASSES` order, summing to 1 per pixel.
    pixel_size_A : angstrom per pixel of this grid.
    frame_shape : (H, W) of the input frame; frame_pixel_size_A : its angstrom per pixel.
    """

    p: np.ndarray
    pixel_size_A: float
    frame_shape: tuple[int, int]
    frame_pixel_size_A: float

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.p.shape[1]), int(self.p.shape[2])

    def to_frame_px(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) (x, y) positions on this grid to input-frame pixels (pixel-centre convention)."""
        h, w = self.shape
        H, W = self.frame_shape
        scale = np.array([W / w, H / h])
        return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5

    def to_grid_px(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_frame_px`."""
        h, w = self.shape
        H, W = self.frame_shape
        scale = np.array([W / w, H / h])
        return (np.asarray(xy, dtype=np.float64) + 0.5) / scale - 0.5


@dataclass
class Atoms:
    """Atoms found in one frame.

    Attributes
    ----------
    xy_px : (N, 2) float64, (x=col, y=row) in input-frame pixels.
    species : (N,) int8 codes into :data:`SPECIES`.
    confidence : (N,) float32 in [0, 1] (peak probability of the atom's class).
    class_prob : (N, 3) float32, mean class probabilities over the atom's site.
    border : (N,) bool, True when the atom is within ``border_A`` of the frame edge.
    pixel_size_A : float, angstrom per pixel of the input frame.
    frame_shape : (H, W) of the input frame, or None when unknown (the lattice graph then takes the
        atoms' bounding box as the frame when judging which atoms may miss neighbours beyond it).
    """

    xy_px: np.ndarray
    species: np.ndarray
    confidence: np.ndarray
    class_prob: np.ndarray
    border: np.ndarray
    pixel_size_A: float
    frame_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.xy_px.shape[0])

    @property
    def xy_A(self) -> np.ndarray:
        """(N, 2) positions in angstrom."""
        return self.xy_px * self.pixel_size_A

    @classmethod
    def empty(cls, pixel_size_A: float) -> "Atoms":
        return cls(np.zeros((0, 2)), np.zeros(0, np.int8), np.zeros(0, np.float32),
                   np.zeros((0, 3), np.float32), np.zeros(0, bool), pixel_size_A)


@dataclass
class Defect:
    """A connected defect group (around Si, or a vacancy / topological defect).

    ``members`` are atom indices into the frame's :class:`Atoms`; ``centre_px`` is (x, y).
    """

    kind: str                 # e.g. "Si-3fold", "Si-4fold", "Si-dimer", "vacancy", "divacancy", "5-8-5"
    formula: str              # e.g. "Si1C3"
    members: np.ndarray
    centre_px: tuple[float, float]
    signature: str = ""       # canonical hash of the local environment
    motif: str = ""           # known name or "new motif k"


@dataclass
class Chemistry:
    """The lattice graph of one frame and what it says.

    bonds : (M, 2) int32 atom index pairs (i < j); bond_length_A : (M,) float.
    coordination : (N,) int16 number of bonds per atom.
    defects : list of :class:`Defect`.
    atom_defect : (N,) int32 index into ``defects`` or -1.
    """

    atoms: Atoms
    bonds: np.ndarray
    bond_length_A: np.ndarray
    coordination: np.ndarray
    defects: list = field(default_factory=list)
    atom_defect: np.ndarray | None = None
    rings: list = field(default_factory=list)   # list of int arrays of atom indices (5-8 members)


@dataclass
class Event:
    """A debounced transformation event, as written to events.jsonl and shown on the dashboard."""

    frame: int                # seq of the frame where the change is confirmed
    t_acquired: float         # Unix seconds of that frame
    latency_s: float          # detection latency: confirmation time - t_acquired of the first changed frame
    kind: str                 # "si_3_to_4", "si_4_to_3", "si_appeared", "si_lost", "si_hop", ...
    atom_id: int              # track id
    x: float                  # px (column)
    y: float                  # px (row)
    x_A: float
    y_A: float
    before: str
    after: str
    confidence: float
    first_frame: int = -1     # seq of the first frame showing the new state
    # "transformation" (the sample changed: raises the alarm) or "bookkeeping" (the field of view or
    # the tracker: logged only); derived from kind/before/after when not given (engine/track/categories.py)
    category: str = ""
    # a rotor step: the defect's orientation before and after (degrees), else None
    angle_before_deg: float | None = None
    angle_after_deg: float | None = None
    # track ids of the atoms involved (a new motif's example atoms), else None
    atom_ids: list | None = None

    def __post_init__(self) -> None:
        if not self.category:
            from engine.track.categories import category_of
            self.category = category_of(self.kind, self.before, self.after)

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)


@dataclass
class FrameResult:
    """Everything the pipeline produced for one frame (what the dashboard and the writers consume)."""

    series: str
    seq: int
    t_acquired: float
    pixel_size_A: float
    frame_shape: tuple[int, int]
    chemistry: Chemistry
    track_ids: np.ndarray                     # (N,) int64 track id per atom of chemistry.atoms (-1: none yet)
    events: list = field(default_factory=list)    # list[Event]
    drift_px: tuple[float, float] = (0.0, 0.0)    # global shift of this frame vs the previous, (dx, dy)
    timings_s: dict = field(default_factory=dict)  # stage name -> seconds
    t_done: float = 0.0                        # Unix seconds when the result was ready
    image: np.ndarray | None = None            # the frame's pixels (for display); may be None
    error: str | None = None                   # set when a stage failed on this frame (the frame is
                                               # skipped: empty chemistry, no tracks, no events)
    confirmed: np.ndarray | None = None        # (N,) bool: the atom's track is confirmed
    health: object | None = None               # engine.health.FrameHealth: verdicts, reasons, scale source;
                                               # a frame not ok keeps its atoms (unreliable) but no tracks/events
    material: object | None = None             # engine.health.material.MaterialVerdict (None: not checked)


@dataclass
class FrameChemistry:
    """The order-independent part of one frame's analysis (network -> atoms -> lattice graph).

    What :func:`engine.pipeline.analyze_frame` returns and :meth:`engine.pipeline.Pipeline.track`
    consumes: it depends on the frame alone (no tracker, no motif library), so it can be computed
    for any frame on any process -- a Dask worker of ``stemwatch analyze --scheduler`` -- and be
    tracked later, in frame order. Defects carry their ``signature`` but no ``motif`` name yet
    (naming "new motif k" depends on the order frames are seen: it happens in ``track``).

    chemistry : None when a stage failed (then ``error`` says why).
    timings_s : stage name -> seconds (``preprocess``, ``network``, ``atoms_graph``; ``wait`` live).
    """

    series: str
    seq: int
    t_acquired: float
    pixel_size_A: float
    frame_shape: tuple[int, int]
    chemistry: Chemistry | None
    timings_s: dict = field(default_factory=dict)
    error: str | None = None
    image: np.ndarray | None = None            # the frame's pixels when the caller keeps them
    health: object | None = None               # engine.health.FrameHealth from HealthMonitor.before (+ snr)
    material: object | None = None             # engine.health.material.MaterialVerdict (None: not checked)
    run: int = 0                               # streamer Frame.run: a restarted series id starts a new run
