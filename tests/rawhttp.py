"""Raw HTTP/1.1 requests over a socket, for bytes a client library refuses to send (header values
that are not UTF-8, paths with odd escapes)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


async def raw_request(base_url: str, method: str, path: bytes, headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
                      body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one request exactly as given; returns (status, body bytes) once the server closes."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: " + parts.netloc.encode(),
            b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
    head += [name + b": " + value for name, value in headers]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split(b" ", 2)[1]), rest.partition(b"\r\n\r\n")[2]
