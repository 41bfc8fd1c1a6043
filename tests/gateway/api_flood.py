"""A hostile client, run as its own process: many concurrent, oversized and slow requests.

``python api_flood.py HOST:PORT TOKEN SECONDS`` opens connections in waves for ``SECONDS`` and
prints one JSON object: how many answers of each HTTP status it got, and how many connections
the server closed without an answer.  Raw sockets (asyncio streams), so nothing limits what it
sends: a 50 MB body declared and streamed, chunked bodies without end, garbage, valid reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter

#: Connections opened at once, wave after wave: hundreds (most get 503: the API sheds load),
#: then fewer than the API serves at once (each gets its real answer).
WAVES = (300, 40)
BIG_CHUNK = b"x" * 65536


async def _exchange(host: str, port: int, request: bytes, body_chunks: int) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        return "connect_failed"
    try:
        try:
            writer.write(request)
            for _ in range(body_chunks):
                writer.write(BIG_CHUNK)
                await asyncio.wait_for(writer.drain(), 2)
        except (OSError, TimeoutError):
            pass  # the server stopped reading or hung up: read what it answered, if anything
        status_line = await asyncio.wait_for(reader.readline(), 10)
        parts = status_line.split()
        return parts[1].decode() if len(parts) >= 2 else "closed"
    except (OSError, TimeoutError):
        return "closed"
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2)


def _requests(token: str) -> list[tuple[bytes, int]]:
    auth = f"Authorization: Bearer {token}\r\n".encode()
    return [
        # 50 MB declared, no token: must be refused before one byte of it is read.
        (
            b"POST /v1/channels/bed1/titers HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n",
            800,
        ),
        # 50 MB declared, with the token: 413 at once (sent, and only announced).
        (
            b"POST /v1/channels/bed1/titers HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n",
            800,
        ),
        (
            b"POST /v1/channels/bed1/titers HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n",
            0,
        ),
        # Chunked without end, with the token: cut off at the limit.
        (
            b"POST /v1/channels/bed1/weight HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Transfer-Encoding: chunked\r\n\r\n10000\r\n",
            1,
        ),
        # Reads, with and without the token.
        (b"GET /v1/channels HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n", 0),
        (b"GET /v1/channels HTTP/1.1\r\nHost: x\r\n\r\n", 0),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 0),
        # Garbage.
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 50, 0),
    ]


async def flood(address: str, token: str, seconds: float) -> dict[str, int]:
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    requests = _requests(token)
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    wave = 0
    while time.monotonic() < deadline:
        jobs = [
            _exchange(host, port, *requests[(wave + i) % len(requests)])
            for i in range(WAVES[wave % len(WAVES)])
        ]
        counts.update(await asyncio.gather(*jobs))
        wave += 1
    return dict(counts)


if __name__ == "__main__":
    address, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(json.dumps(asyncio.run(flood(address, token, seconds))), flush=True)
