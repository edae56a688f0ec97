"""A scriptable local HTTP server for tests (standard library, in a thread)."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    """What the server answers: status, headers, body; ``delay`` before answering and
    ``trickle`` seconds between 64 KiB pieces of the body."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0
    ranges: bool = False  # honour Range requests on body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Server:
    """Routes a path to a list of replies, served in turn (the last one repeats)."""

    def __init__(self, host: str = "127.0.0.1", tls: Path | None = None) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                replies = outer.routes.get(self.path.split("?")[0]) or [Reply(404, b"no route")]
                reply = replies.pop(0) if len(replies) > 1 else replies[0]
                time.sleep(reply.delay)
                payload, status = reply.body, reply.status
                headers = dict(reply.headers)
                requested = self.headers.get("range", "")
                if reply.ranges and requested.startswith("bytes=") and status == 200:
                    start = int(requested[6:].split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(payload) - 1}/{len(payload)}"
                    payload, status = payload[start:], 206
                if reply.ranges:
                    headers.setdefault("ETag", '"v1"')
                    headers.setdefault("Accept-Ranges", "bytes")
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    step = 64 * 1024
                    for i in range(0, len(payload), step):
                        self.wfile.write(payload[i : i + step])
                        self.wfile.flush()
                        if reply.trickle:
                            time.sleep(reply.trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        if tls is not None:  # a certificate made by self_signed()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, path: str, *replies: Reply) -> str:
        self.routes[path] = list(replies)
        return self.url + path

    def start(self) -> Server:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path.split("?")[0] == path]


def self_signed(folder: Path) -> Path:
    """A certificate for 127.0.0.1 in ``folder`` (cert.pem, key.pem), made by openssl;
    trust it with SSL_CERT_FILE=folder/cert.pem."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return folder


def when(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
