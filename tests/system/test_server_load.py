"""The demo server under hostile load, on loopback only.

Claims: a body shorter than its Content-Length is refused with 400 whether the client
half-closes or stalls; a client that stalls mid-request is dropped within the read timeout;
an oversized body is refused; connections past `max_connections` get a quick 503; 50 clients
at once (well-formed, truncated, stalled, oversized and disconnecting ones) each get 200 or
503 for a well-formed request, and one that asks again after a 503 is answered once the
stalled clients are dropped, while the server's threads and memory stay bounded, it prints
no traceback, and it answers afterwards.

The server runs in its own process (so its threads and memory are its own) with a 1 s read
timeout and 8 connection threads; clients are raw sockets, so they can misbehave.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffumnist.webserver import LINGER_S, MAX_REFUSING

READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 8
SLACK_S = 3.0  # scheduling on a busy 2-core machine; far below anything a client would notice
SERVER = """
import sys
from diffumnist.app import make_server
server = make_server("127.0.0.1", 0, read_timeout=float(sys.argv[1]),
                     max_connections=int(sys.argv[2]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""
GENERATE = json.dumps({"digits": [1], "steps": 2}).encode()  # the fast preset, 2 steps
DENOISE = json.dumps({"source": "canvas", "pixels": [0] * 784}).encode()


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    stderr: Path

    def status(self) -> dict[str, int]:
        """Threads and resident memory (kB: VmRSS now, VmHWM at peak) from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("Threads", "VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return fields

    def log(self) -> str:
        return self.stderr.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    stderr = tmp_path_factory.mktemp("server") / "stderr.txt"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(READ_TIMEOUT_S), str(MAX_CONNECTIONS)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
    try:
        port = int(process.stdout.readline())
        yield Server(process, port, stderr)
    finally:
        process.kill()
        process.wait(10)


def request(port: int, method: str, path: str, body: bytes | None = None, length=None) -> bytes:
    """An HTTP request's bytes; `length` overrides the Content-Length a body would have."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if body is not None:
        length = len(body) if length is None else length
        head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


@dataclass
class Reply:
    status: int | None  # None: the server closed without answering
    body: bytes
    seconds: float  # from the last byte sent until the server closed


def exchange(
    port: int, data: bytes, *, half_close: bool = False, reset: bool = False
) -> Reply | None:
    """Send `data`, then read until the server closes (None if `reset`: we leave at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sent = time.monotonic()
        if reset:  # leave without reading; SO_LINGER 0 makes the close a reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            return None
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/") else None
    return Reply(status, body, time.monotonic() - sent)


def get_info(server: Server) -> Reply:
    return exchange(server.port, request(server.port, "GET", "/api/info"))


def test_a_truncated_body_is_refused(server):
    data = request(server.port, "POST", "/api/generate", GENERATE, length=len(GENERATE) + 50)
    reply = exchange(server.port, data, half_close=True)  # the client says it is done
    assert reply.status == 400
    assert f"ended after {len(GENERATE)} of {len(GENERATE) + 50} bytes" in reply.body.decode()
    reply = exchange(server.port, data)  # the client stalls: the read timeout ends the wait
    assert reply.status == 400 and reply.seconds < READ_TIMEOUT_S + LINGER_S + SLACK_S


def test_an_oversized_body_is_refused(server):
    data = request(server.port, "POST", "/api/generate", b"{" * 1000, length=10**7)
    reply = exchange(server.port, data)
    assert reply.status == 400 and "1 to 16384 bytes" in reply.body.decode()


def test_a_client_stalled_in_its_headers_is_dropped_within_the_read_timeout(server):
    partial = request(server.port, "GET", "/api/info")[:-2]  # no blank line: headers unfinished
    reply = exchange(server.port, partial)
    assert reply.status is None  # nothing to answer: the request never arrived
    assert reply.seconds < READ_TIMEOUT_S + LINGER_S + SLACK_S


def test_connections_past_the_limit_get_a_quick_503(server):
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in stalled:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # each holds a connection thread
        time.sleep(0.2)  # let the server accept them all
        reply = get_info(server)
        assert reply.status == 503 and b"busy" in reply.body
        assert reply.seconds < READ_TIMEOUT_S  # refused, not queued behind the stalled ones
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(READ_TIMEOUT_S)
    assert get_info(server).status == 200


def _client(kind: str, port: int) -> tuple[str, Reply | None]:
    post = lambda path, body, length=None: request(port, "POST", path, body, length)  # noqa: E731
    if kind == "info":  # asks again after a 503, as the busy reply says to
        deadline = time.monotonic() + READ_TIMEOUT_S + LINGER_S + SLACK_S
        while (reply := exchange(port, request(port, "GET", "/api/info"))).status == 503:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return kind, reply
    if kind == "generate":
        return kind, exchange(port, post("/api/generate", GENERATE))
    if kind == "denoise":
        return kind, exchange(port, post("/api/denoise", DENOISE))
    if kind == "truncated":
        return kind, exchange(port, post("/api/generate", GENERATE, 500), half_close=True)
    if kind == "stalled body":
        return kind, exchange(port, post("/api/generate", GENERATE, 500))
    if kind == "stalled headers":
        return kind, exchange(port, request(port, "GET", "/api/info")[:-2])
    if kind == "oversized":
        return kind, exchange(port, post("/api/denoise", b"[" * 1000, 10**7))
    if kind == "reset":
        return kind, exchange(port, post("/api/generate", GENERATE), reset=True)
    if kind == "leaves the stream":
        reply = exchange(port, post("/api/generate", json.dumps({"digits": [7]}).encode()))
        if reply.status == 200:
            events = request(port, "GET", f"/api/jobs/{json.loads(reply.body)['job']}/events")
            exchange(port, events, reset=True)
        return kind, reply
    raise ValueError(kind)


CLIENTS = (
    ["info"] * 16
    + ["generate"] * 6
    + ["denoise"] * 4
    + ["truncated"] * 5
    + ["stalled body"] * 5
    + ["stalled headers"] * 5
    + ["oversized"] * 3
    + ["reset"] * 4
    + ["leaves the stream"] * 2
)


def test_fifty_clients_at_once(server):
    assert len(CLIENTS) == 50
    warm_up = [request(server.port, "POST", f"/api/{path}", body) for path, body in
               (("generate", GENERATE), ("denoise", DENOISE))]  # fmt: skip
    assert [exchange(server.port, data).status for data in warm_up] == [200, 200]
    time.sleep(0.5)  # the warm-up generation finishes
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = server.status()
    peak_threads, stop = [before["Threads"]], threading.Event()

    def watch() -> None:
        while not stop.wait(0.01):
            peak_threads.append(server.status()["Threads"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = threading.Barrier(len(CLIENTS))
    results: list[tuple[str, Reply | None]] = []

    def run(kind: str) -> None:
        start.wait()
        results.append(_client(kind, server.port))

    threads = [threading.Thread(target=run, args=(kind,)) for kind in CLIENTS]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    watcher.join()
    print(f"50 clients: {time.monotonic() - began:.1f} s; threads {before['Threads']} idle, "
          f"{max(peak_threads)} at most; RSS {before['VmRSS'] // 1024} MiB before, "
          f"peak {server.status()['VmHWM'] // 1024} MiB")  # fmt: skip

    assert len(results) == len(CLIENTS)
    seen: dict[str, list] = {}
    for kind, reply in results:
        seen.setdefault(kind, []).append(reply and reply.status)
    print({kind: sorted(statuses, key=str) for kind, statuses in seen.items()})
    for kind, reply in results:
        if kind in ("info", "generate", "denoise", "leaves the stream"):
            assert reply.status in (200, 503), (kind, reply)
        elif kind in ("truncated", "stalled body", "oversized"):
            assert reply.status in (400, 503), (kind, reply)
        elif kind == "stalled headers":
            assert reply.status in (None, 503), (kind, reply)
        if kind.startswith("stalled"):
            assert reply.seconds < READ_TIMEOUT_S + LINGER_S + SLACK_S, (kind, reply)
    # More clients stall than there are connection threads, so for up to the read timeout
    # the server may refuse everyone else; once it drops them, a client that asks again is
    # answered
    assert seen["info"].count(200) >= len(seen["info"]) // 2
    # bounded: the idle threads (main, worker, torch's pool), plus one per connection and
    # the refusers; memory grows by the jobs' images, not by the connections
    assert max(peak_threads) <= before["Threads"] + MAX_CONNECTIONS + MAX_REFUSING
    assert server.status()["VmHWM"] - before["VmRSS"] < 300 * 1024

    assert get_info(server).status == 200
    deadline = time.monotonic() + 10
    while server.status()["Threads"] > before["Threads"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.status()["Threads"] <= before["Threads"]  # every connection thread ended
    assert "Traceback" not in server.log(), server.log()
    assert server.process.poll() is None
