"""Laboratory code: evaluation, benchmarks, soak, held-out sets, training (never imported by the runtime)."""
