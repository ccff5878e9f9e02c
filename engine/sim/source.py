"""The simulated microscope as a frame source (:mod:`streamer.source`; scheme ``sim:``).

``open_source("sim:switching")`` or ``SimulatorSource("switching", n_frames=40)`` yields the
frames of a :class:`engine.sim.movie.MovieSimulator` as :class:`streamer.frame.Frame` (series
``sim-SCENARIO-SEED-TIME``, seq from 0, ``t_acquired`` = start + seq x frame time, the movie's
pixel size; ``meta`` says where it comes from). The truth of each frame is kept when ``keep_truth``
(``ground_truth()`` at the end). A finite movie is exhausted after its last frame; ``random``
without ``n_frames`` is endless. A simulator loses nothing: its report is always complete.
"""

from __future__ import annotations

import time

from streamer.frame import Frame
from streamer.source import BaseSource, SourceExhausted, SourceReport


class SimulatorSource(BaseSource):
    """``scenario`` (switching, field, lowdose, random) with :func:`engine.sim.movie.scenario` overrides,
    or a ready ``spec`` (:class:`engine.sim.movie.MovieSpec`)."""

    def __init__(self, scenario: str = "random", spec=None, series: str | None = None, t0: float | None = None,
                 keep_truth: bool = False, material: str = "graphene", **overrides):
        from engine.sim.movie import MovieSimulator
        from engine.sim.movie import scenario as make_spec

        self.spec = spec if spec is not None else make_spec(scenario or "random", **overrides)
        if material != "graphene":        # another sample on the same imaging model (engine.sim.materials)
            from engine.sim.materials import MaterialMovie

            self.simulator = MaterialMovie(self.spec, material)
        else:
            self.simulator = MovieSimulator(self.spec)
        self.t0 = time.time() if t0 is None else float(t0)
        self.series = series or f"sim-{scenario}-{self.spec.seed}-{int(self.t0)}"
        self.description = f"simulator {scenario} (seed {self.spec.seed})"
        self.meta = {"source": "stemwatch simulate", "scenario": scenario, "seed": int(self.spec.seed),
                     "dose_e_per_A2": float(self.simulator.imaging.dose_e_per_A2),
                     "counts": "uint16" if self.spec.output == "uint16" else "float32", "material": material}
        self.last_truth = None
        self._keep = keep_truth
        self._it = None
        self._n = 0
        self._done = False

    def open(self) -> "SimulatorSource":
        if self._it is None:
            self._it = self.simulator.frames(keep=self._keep)
        return self

    def read(self, timeout_s: float | None = None) -> Frame | None:
        if self._it is None:
            self.open()
        item = next(self._it, None)
        if item is None:
            self._done = True
            raise SourceExhausted(self.description)
        img, self.last_truth = item
        f = Frame(data=img, series=self.series, seq=self._n, t_acquired=self.t0 + self._n * self.spec.frame_time_s,
                  pixel_size_A=float(self.spec.pixel_size_A), meta=dict(self.meta))
        self._n += 1
        return f

    def ground_truth(self):
        return self.simulator.ground_truth()

    def report(self) -> SourceReport:
        return SourceReport(source=self.description, frames=self._n, series=[self.series] if self._n else [],
                            complete=True)

    def close(self, timeout_s: float | None = None) -> None:
        if self._it is not None:
            self._it.close()
