"""Laboratory code: evaluation, benchmarks and held-out validation, kept apart from the runtime packages."""
