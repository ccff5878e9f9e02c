"""Argument types shared by the laboratory's command-line scripts."""

from __future__ import annotations

import argparse


def positive_int_list(text: str) -> list[int]:
    """``"512,1024,2048"`` -> ``[512, 1024, 2048]``; argparse reports anything else in one line."""
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"positive integers, got {text!r}")
    return values
