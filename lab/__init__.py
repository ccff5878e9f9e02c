"""The laboratory: evaluation, benchmark and held-out code that the runtime packages never import."""
