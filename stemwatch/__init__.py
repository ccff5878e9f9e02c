"""stemwatch: a live, microscope-side analyzer for atomically resolved STEM movies.

The product is split into three top-level packages that follow the data:

* :mod:`streamer`  - frames over ZeroMQ, recording, replay, file import/export;
* :mod:`engine`    - simulator, inference, atoms, lattice graph, tracking, events, pipeline;
* :mod:`dashboard` - the Bokeh operator screen.

This package holds only what ties them together: the typed configuration, the CLI and the
benchmark runner.
"""

__version__ = "0.1.0"
