"""Real servers on loopback for the channel adapters: an HTTP server that records each request and
answers from a script, and an aiosmtpd SMTP server that records envelopes, counts connections and
can refuse given recipients. Nothing here mocks httpx or smtplib."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: the instant channel tests run at (Date headers, receipts); tests read it from ``fixed_now``
#: (test modules do not import this file: ``conftest`` is also the name of tests/conftest.py)
FIXED_NOW = "2026-11-24T10:00:00+03:00"


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """IZIN_NOW for every channel test; the instant as a UTC datetime."""
    monkeypatch.setenv("IZIN_NOW", FIXED_NOW)
    return datetime.fromisoformat(FIXED_NOW).astimezone(timezone.utc)


# --- HTTP --------------------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class HttpServer:
    """A ThreadingHTTPServer on 127.0.0.1 that records requests and answers scripted replies
    (then ``default``, 200 ``{}``)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.connections = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
            disable_nagle_algorithm = True  # headers and body go in separate writes

            def setup(self) -> None:
                super().setup()
                stub.connections += 1

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                stub.requests.append(Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                             body))
                reply = stub.replies.popleft() if stub.replies else stub.default
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    content_type = "application/octet-stream" if isinstance(reply.body, bytes) else "application/json"
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)
        self._thread.start()

    def reply(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None,
              delay_s: float = 0.0) -> None:
        """Queue the answer to the next request."""
        self.replies.append(Reply(status, {} if body is None else body, headers or {}, delay_s))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- SMTP --------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: bytes | None


class RecordingHandler:
    """aiosmtpd handler: records accepted messages; ``refuse[address]`` answers RCPT with that reply,
    ``mail_replies`` answer the next MAIL commands, one each."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.refuse: dict[str, str] = {}
        self.mail_replies: deque[str] = deque()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          mail_options: list[str]) -> str:
        if self.mail_replies:
            return self.mail_replies.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        login = getattr(session.auth_data, "login", None) if session.authenticated else None
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, login))
        return "250 2.0.0 queued as 42"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 (a free port picked by the OS) counting connections."""

    def __init__(self, **smtp_kwargs: Any) -> None:
        from aiosmtpd.controller import Controller

        self.handler = RecordingHandler()
        self.sessions: list[Any] = []
        server = self

        class CountingController(Controller):
            def factory(self) -> Any:
                smtp = super().factory()
                server.sessions.append(smtp)
                return smtp

            def _trigger_server(self) -> None:
                # bound to port 0: learn the real port before the readiness probe connects
                self.port = self.server.sockets[0].getsockname()[1]
                super()._trigger_server()

        self.controller = CountingController(self.handler, hostname="127.0.0.1", port=0, **smtp_kwargs)
        self.controller.start()
        self.port = self.controller.port
        self.sessions.clear()  # forget the controller's own readiness probe

    @property
    def connections(self) -> int:
        return len(self.sessions)

    def drop_connections(self) -> None:
        """Close every client connection from the server side, as an idle timeout would."""
        done = threading.Event()

        def close_all() -> None:
            for smtp in self.sessions:
                if smtp.transport is not None:
                    smtp.transport.close()
            done.set()

        self.controller.loop.call_soon_threadsafe(close_all)
        assert done.wait(5)
        time.sleep(0.05)  # let the FIN reach the client's socket

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SmtpServer]]:
    servers: list[SmtpServer] = []

    def start(**smtp_kwargs: Any) -> SmtpServer:
        server = SmtpServer(**smtp_kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpServer]) -> SmtpServer:
    return smtp_server_factory()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command (skip without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed; the TLS tests need it for a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    result = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"openssl could not make a test certificate: {result.stderr.strip()[:200]}")
    return cert, key


@pytest.fixture(scope="session")
def server_tls_context(tls_cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_cert)
    return context
