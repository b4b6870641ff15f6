"""A lean HTTP/1.1 load client for the serving benchmarks, and CPU accounting of both sides.

Why not httpx: on the benchmark's 2 cores the client shares the CPUs with the server, and
httpx's AsyncClient spent ~7 ms of CPU per request with 50 connections (its pool scans every
connection for every request), so it, not the server, set the pace and the tail. This client
holds one keep-alive connection per simulated user and parses only what the benchmark reads:
the status, Content-Length or chunked framing, and the Server-Timing header.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit


class LeanConnection:
    """One keep-alive HTTP/1.1 connection; reconnects after the server closes it."""

    def __init__(self, base: str) -> None:
        u = urlsplit(base)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, lower-cased headers, body); raises OSError/IncompleteReadError on a broken exchange."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: */*\r\n\r\n".encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(b":")
                    headers[k.strip().lower()] = v.strip()
            body = await self._body(headers)
        except BaseException:
            self.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body

    async def _body(self, headers: dict[bytes, bytes]) -> bytes:
        if b"content-length" in headers:
            return await self.reader.readexactly(int(headers[b"content-length"]))
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(parts)
                parts.append(chunk[:-2])
        body = await self.reader.read()  # no framing: the body runs to the end of the connection
        self.close()
        return body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from `state` on; the command name may hold spaces


def tree_cpu_s(root_pid: int) -> float:
    """User + system CPU seconds used so far by root_pid and its live descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None:
                parents[int(entry)] = int(f[1])
    tree, grew = {root_pid}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    ticks = 0
    for pid in tree:
        f = _stat_fields(pid)
        if f is not None:
            ticks += int(f[11]) + int(f[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of this process (the client) and of the server's process tree over a block."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.client_s = self.server_s = self.wall_s = 0.0

    def __enter__(self) -> CpuMeter:
        self._c0, self._s0, self._w0 = time.process_time(), tree_cpu_s(self.server_pid), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.client_s = time.process_time() - self._c0
        self.server_s = tree_cpu_s(self.server_pid) - self._s0
        self.wall_s = time.perf_counter() - self._w0
