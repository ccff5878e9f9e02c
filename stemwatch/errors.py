"""User errors: what the command line reports as one clear line with exit status 2 (no traceback).

Handlers raise :class:`UserError` for bad input they detect themselves; :func:`user_error_message`
also recognises the library exceptions that always mean bad input or a bad environment (a missing
or unreadable file, a busy port, a file that cannot be imported) and turns them into one line.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno

#: exit status for bad input (argparse uses it too)
EXIT_USAGE = 2


class UserError(Exception):
    """Bad input or environment: the message is shown as it is, the exit status is 2."""


def _oserror_line(exc: OSError) -> str:
    why = exc.strerror or str(exc)
    if exc.filename is not None and str(exc.filename) not in why:
        return f"{exc.filename}: {why}"
    return why


def user_error_message(exc: BaseException) -> str | None:
    """One line for an exception that means bad input, or None for anything else (a bug)."""
    if isinstance(exc, UserError) or getattr(exc, "user_error", False):
        return str(exc)                   # (streamer's FileImportError and SecurityError say user_error: the
                                          # streamer needs nothing of stemwatch, so it cannot subclass UserError)
    if isinstance(exc, OSError):
        return _oserror_line(exc)
    try:
        import zmq
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, zmq.ZMQError):
        if exc.errno == errno.EADDRINUSE:
            return f"address already in use ({exc}): another program (an earlier stemwatch?) holds that port"
        if exc.errno in (errno.EINVAL, errno.EPROTONOSUPPORT, errno.ENODEV, errno.EADDRNOTAVAIL):
            return f"bad ZeroMQ endpoint: {exc}"
    return None
