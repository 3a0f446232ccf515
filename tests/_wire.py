"""Raw WebSocket plumbing for tests that must send what a well-behaved client would not."""

from __future__ import annotations

import asyncio
import socket

from websockets.frames import Frame, Opcode

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def raw_websocket(
    port: int, *, sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection to 127.0.0.1:``port`` and complete the WebSocket handshake."""
    if sock is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(UPGRADE)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def text_frame(text: str, *, mask: bool = True) -> bytes:
    """One serialized text frame (masked, as clients must, unless told otherwise)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=mask, extensions=[])
