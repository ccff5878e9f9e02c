"""Streamer: the ZeroMQ wire protocol, publisher, receiver, recording, replay and file import.

``Publisher`` needs only pyzmq, msgpack and numpy (for the acquisition PC); ``Receiver`` pulls in
the project's configuration. Both are imported lazily so ``import streamer`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Publisher", "Receiver", "Frame", "PROTOCOL_VERSION", "ProtocolError"]

if TYPE_CHECKING:  # pragma: no cover
    from streamer.frame import Frame
    from streamer.protocol import PROTOCOL_VERSION, ProtocolError
    from streamer.publisher import Publisher
    from streamer.receiver import Receiver


def __getattr__(name: str):
    if name == "Publisher":
        from streamer.publisher import Publisher
        return Publisher
    if name == "Receiver":
        from streamer.receiver import Receiver
        return Receiver
    if name == "Frame":
        from streamer.frame import Frame
        return Frame
    if name in ("PROTOCOL_VERSION", "ProtocolError"):
        from streamer import protocol
        return getattr(protocol, name)
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")
