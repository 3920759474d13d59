"""A reverse proxy on loopback that lets through only requests bearing one token, as a team puts
in front of an MLflow server for `MLFLOW_TRACKING_TOKEN` clients. A test fixture, not a product
part: it forwards every method, path and body to the upstream server and answers 401 otherwise,
as such proxies do (plain text, no MLflow error JSON). Like a gateway that maps tokens to
accounts, it may log in upstream as one account of a basic-auth server (`upstream_auth`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


@dataclass
class Proxy:
    """The proxy's URL and what it did: requests let through and refused."""

    url: str
    token: str
    forwarded: int = 0
    refused: list[str] = field(default_factory=list)


@contextmanager
def token_proxy(upstream: str, token: str, upstream_auth: tuple[str, str] | None = None) -> Iterator[Proxy]:
    """Serve `upstream` at a new loopback URL to requests with `Authorization: Bearer <token>`,
    sending them on with `upstream_auth` (user, password) as basic auth when given."""
    session = requests.Session()
    session.auth = upstream_auth

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet: the test's output is its own
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.headers.get("Authorization") != f"Bearer {token}":
                proxy.refused.append(f"{self.command} {self.path}")
                self._answer(401, {"Content-Type": "text/plain"}, b"Unauthorized: a valid bearer token is required")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"authorization"}}
            answer = session.request(
                self.command, upstream + self.path, data=body, headers=headers, timeout=120, allow_redirects=False
            )
            proxy.forwarded += 1
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-encoding"}}
            self._answer(answer.status_code, kept, answer.content)

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy = Proxy(f"http://127.0.0.1:{server.server_address[1]}", token)
    thread = threading.Thread(target=server.serve_forever, name="token-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        session.close()
