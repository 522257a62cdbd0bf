"""The client pod's transparent proxy: accept redirected connections on 4140, read where they
were going (SO_ORIGINAL_DST), connect there, splice both directions.

    python -m agent.lab.tproxy [--port 4140]

It must run as the proxy uid (2102) so that proxy-init's OUTPUT rules let its own outbound
connections through. When the onward connect fails, the client connection is reset (linger 0),
so an application sees a refused service as a prompt reset, never a hang.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import struct

SO_ORIGINAL_DST = 80
CONNECT_TIMEOUT = 5.0


def original_dst(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()   # half-close: the other direction may still be talking
    except (ConnectionError, OSError):
        _reset(writer)


async def _handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
    try:
        host, port = original_dst(c_writer.get_extra_info("socket"))
        u_reader, u_writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                    CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        _reset(c_writer)
        return
    try:
        await asyncio.gather(_pipe(c_reader, u_writer), _pipe(u_reader, c_writer))
    finally:
        for w in (u_writer, c_writer):
            if not w.is_closing():
                w.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "0.0.0.0", port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=4140)
    asyncio.run(serve(p.parse_args().port))


if __name__ == "__main__":
    main()
