"""``wait_until``: poll a condition until it holds (a hang guard, never a speed claim)."""

from __future__ import annotations

import time


#: every wait is at least this long: a timeout only stops a hung test, a busy machine must not fail it
#: (the same floor as tests/_browser.py's wait_for)
MIN_WAIT_S = 60.0


def wait_until(pred, timeout: float = MIN_WAIT_S, period: float = 0.01) -> bool:
    """Poll ``pred()`` every ``period`` s until it is truthy (True) or ``max(timeout, MIN_WAIT_S)`` s
    pass (then the last ``pred()``). The timeout only stops a hung test: a busy machine must not fail
    it, so it is never shorter than :data:`MIN_WAIT_S` (to check that something does *not* happen,
    wait for what shows it had the chance to, never for a time window)."""
    t_end = time.monotonic() + max(float(timeout), MIN_WAIT_S)
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(period)
    return bool(pred())
