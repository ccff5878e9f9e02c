"""Websocket upgrade probe for the dashboard's origin checks (tornado client, no browser)."""

from __future__ import annotations

import asyncio

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect


def ws_status(host: str, port: int, origin: str) -> int:
    """HTTP status of a websocket upgrade to ``ws://host:port/ws`` with this ``Origin`` header:
    101 when the server accepts it, else the refusal's code (403 for a refused origin)."""
    async def go():
        try:
            conn = await websocket_connect(HTTPRequest(f"ws://{host}:{port}/ws", headers={"Origin": origin}))
        except HTTPClientError as exc:
            return exc.code
        conn.close()
        return 101
    return asyncio.run(go())
