"""Streamer: the ZeroMQ wire protocol, publisher, receiver, recording, replay and file import."""
