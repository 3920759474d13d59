"""HTTP peers that misbehave on purpose, on loopback: what S3 clients meet when an endpoint or a
proxy in front of it stops playing its part. A real S3 endpoint (moto) cannot be made to do this.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

_ANSWER = b'HTTP/1.1 200 OK\r\nETag: "0"\r\nContent-Length: 0\r\n\r\n'


@dataclass
class Peer:
    """What the peer received: one `(request line and headers, body)` per request."""

    url: str
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)


@contextmanager
def http_peer(answers: bool) -> Iterator[Peer]:
    """A server that never sends `100 Continue`: it reads each request's headers, then its body
    (`Content-Length` bytes), then answers `200 OK` with an empty body when `answers`, or never
    (it keeps reading, like an endpoint that took a request and went silent).

    Example:
        >>> with http_peer(answers=False) as peer:  # doctest: +SKIP
        ...     ...  # point AWS_ENDPOINT_URL at peer.url
    """
    listener = socket.create_server(("127.0.0.1", 0))
    peer = Peer(f"http://127.0.0.1:{listener.getsockname()[1]}")
    connections: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        buffer = b""
        with suppress(OSError):
            while (request := _read_request(conn, buffer)) is not None:
                head, body, buffer = request
                peer.requests.append((head, body))
                if not answers:
                    while conn.recv(65536):
                        pass
                    return
                conn.sendall(_ANSWER)

    def accept() -> None:
        with suppress(OSError):
            while True:
                conn, _ = listener.accept()
                connections.append(conn)
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield peer
    finally:
        for sock in (listener, *connections):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The next request's head and body, and what was read beyond them; None once the client left."""
    while b"\r\n\r\n" not in buffer:
        if not (chunk := conn.recv(65536)):
            return None
        buffer += chunk
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = int(lengths[0]) if lengths else 0
    while len(buffer) < length:
        if not (chunk := conn.recv(65536)):
            return None
        buffer += chunk
    return head, buffer[:length], buffer[length:]
