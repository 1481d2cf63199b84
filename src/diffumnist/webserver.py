"""A standard-library HTTP server that stays up when clients misbehave.

Why apart from the demo: these protections are about sockets and threads, not diffusion,
and are easier to read and test without the models beside them. `ThreadingHTTPServer`
alone starts a thread per connection with no limit and waits forever on a silent client.
Here each connection gets a thread only while one of `max_connections` is free (more get a
quick 503 from a few refusing threads, or just a close when those are busy too); every read
has a timeout; a body must arrive whole within it (a shorter one is refused, never parsed);
the close first drains what the client still sends, so the reply is not lost to a reset; a
client that went away is a debug line, never a traceback. Standard library only.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32  # connection threads; more connections are answered 503
MAX_REFUSING = 8  # threads answering those 503s; when all are busy, a connection is closed
READ_TIMEOUT_S = 10.0  # a client silent this long is dropped; a body must arrive within it
LINGER_S = 0.5  # after replying, how long to read what the client still sends
BUSY_REPLY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n"
    b'{"error": "the server is busy with other connections; try again in a moment"}'
)


class BadRequest(ValueError):
    """The request body is missing, truncated, too large or not JSON: answer 400."""


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server with bounded connection threads and a read timeout."""

    daemon_threads = True
    request_queue_size = 64  # connections the kernel holds until accepted

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
        read_timeout: float = READ_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
    ) -> None:  # fmt: skip
        self.read_timeout = read_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusers = threading.BoundedSemaphore(MAX_REFUSING)
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """A thread for the connection if one is free, else a quick 503 (or just a close)."""
        if self._slots.acquire(blocking=False):
            super().process_request(request, client_address)
        elif self._refusers.acquire(timeout=2 * LINGER_S):  # each refusal ends within that
            threading.Thread(target=self._refuse, args=(request,), daemon=True).start()
        else:
            self.close_request(request)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(LINGER_S)
            request.sendall(BUSY_REPLY)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._refusers.release()

    def shutdown_request(self, request: socket.socket) -> None:
        """Close after the reply, first reading (for LINGER_S at most) what the client still
        sends: closing with unread input resets the connection, which can lose the reply."""
        deadline = time.monotonic() + LINGER_S
        try:
            request.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(65536):
                    break
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or stalled is routine; anything else is logged in full."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("client %s went away", client_address)
        else:
            log.exception("error while serving %s", client_address)


class TimedRequestHandler(BaseHTTPRequestHandler):
    """A handler whose reads time out, whose bodies arrive whole, and whose log is quiet."""

    server: BoundedHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def read_json(self, max_bytes: int) -> object:
        """The request body as JSON; only application/json, so no cross-site form can post.

        The whole body must arrive within the read timeout; a shorter one is refused.
        """
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise BadRequest("send the request as Content-Type: application/json")
        length = self.headers.get("Content-Length", "")
        length = int(length) if length.isascii() and length.isdigit() else 0
        if not 0 < length <= max_bytes:
            raise BadRequest(f"the request body must be 1 to {max_bytes} bytes")
        body, deadline = b"", time.monotonic() + self.server.read_timeout
        try:
            while len(body) < length and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not (chunk := self.rfile.read1(length - len(body))):
                    break
                body += chunk
        except TimeoutError:
            pass
        self.connection.settimeout(self.server.read_timeout)
        if len(body) < length:
            raise BadRequest(f"the request body ended after {len(body)} of {length} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise BadRequest("the request body is not valid JSON") from None

    def send_body(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        """The whole reply at once, never cached."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        self.send_body(status, json.dumps(data).encode(), "application/json")
