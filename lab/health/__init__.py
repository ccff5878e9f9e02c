"""Evaluation and benchmarks of frame health (engine/health)."""
