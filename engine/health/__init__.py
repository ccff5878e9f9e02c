"""Frame health: what the analyzer is looking at, before it believes it.

* :mod:`engine.health.scale` -- pixel size from the graphene lattice (Fourier rings at 2.13 / 1.23 A);
* :mod:`engine.health.verdict` -- per-frame verdicts (ok, blank, non_finite, saturated, no_lattice,
  low_snr, glitch, fov_jump, too_large) with a short human reason;
* :mod:`engine.health.monitor` -- the per-series state (scale decision, recent-frame statistics) the
  pipeline keeps, and :class:`FrameHealth`, the plain-data record attached to each ``FrameResult``.
"""
