"""``wait_until``: poll a condition until it holds (a hang guard, never a speed claim)."""

from __future__ import annotations

import time


def wait_until(pred, timeout: float = 60.0, period: float = 0.01) -> bool:
    """Poll ``pred()`` every ``period`` s until it is truthy (True) or ``timeout`` s pass (then the
    last ``pred()``). The timeout only stops a hung test: a busy machine must not fail it."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(period)
    return bool(pred())
