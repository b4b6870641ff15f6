"""`serve --workers N` (app.workers): a listening socket per worker, connections spread over the
workers, a dead worker replaced, all of them stopped with the server.

Before: uvicorn's workers shared one socket, and a burst of 50 keep-alive connections went 47/3
or 43/7 to one worker, which then served most of the load while the other idled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from live_servers import free_port, start_serve, wait_for
from make_fixture_index import build_fixture_index

WAIT_S = 60.0  # upper bound for waiting on the server, never a timing assertion
N_CONNS = 60


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of IPv4 TCP sockets with local `port` in `state` (0A listening, 01 established)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == state:
            inodes.add(int(f[9]))
    return inodes


def _workers(server_pid: int, port: int) -> list[int]:
    """Worker processes: the server's children that listen on the port."""
    listening = _tcp_inodes(port, "0A")
    return [p for p in _children(server_pid) if _socket_inodes(p) & listening]


@pytest.fixture
def server(tmp_path):
    index = build_fixture_index(tmp_path / "idx")
    port = free_port()
    proc = start_serve(index, port)
    try:
        wait_for(lambda: len(_workers(proc.pid, port)) == 2 and _healthy(port), "server did not start", WAIT_S)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=40)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_each_worker_listens_on_its_own_socket_and_gets_connections(server):
    proc, port = server
    workers = _workers(proc.pid, port)
    listening = _tcp_inodes(port, "0A")
    own = [_socket_inodes(w) & listening for w in workers]
    assert len(workers) == 2 and all(len(s) == 1 for s in own) and own[0] != own[1]
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(N_CONNS)]
    try:
        for c in conns:  # one request each, so every connection has been accepted by a worker
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
        established = _tcp_inodes(port, "01")
        shares = [len(_socket_inodes(w) & established) for w in workers]
        assert sum(shares) == N_CONNS
        # spread by address hash: a share under 10 of 60 has odds ~1e-7 (was 47/3 and 43/7 of 50 with one socket)
        assert min(shares) >= 10, shares
    finally:
        for c in conns:
            c.close()


def test_a_dead_worker_is_replaced_and_all_stop_with_the_server(server):
    proc, port = server
    victim = _workers(proc.pid, port)[0]
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: (w := _workers(proc.pid, port)) and len(w) == 2 and victim not in w and w,
                     "the dead worker was not replaced", WAIT_S)
    assert _healthy(port)
    proc.terminate()
    proc.wait(timeout=40)
    assert all(not Path(f"/proc/{w}").exists() or "Z" in Path(f"/proc/{w}/stat").read_text().split(")")[1][:3]
               for w in replaced)
    assert not _healthy(port)


def test_ctrl_c_stops_every_process_without_a_traceback(tmp_path):
    """Ctrl+C signals the whole process group, workers still starting up included."""
    index = build_fixture_index(tmp_path / "idx")
    port = free_port()
    proc = start_serve(index, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    first = proc.stdout.readline().decode()  # the supervisor's line: workers are starting now
    assert f"serving http://127.0.0.1:{port} with 2 workers" in first
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0 and "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert not _healthy(port)
