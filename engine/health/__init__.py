"""Frame health: is the frame fit for analysis, and what is it showing (engine.health.material)."""
