"""Local sinks for the sending benchmark: an SMTP server that accepts and discards, and an HTTP
server that answers like an SMS provider. Both listen on loopback only.

    python scripts/bench/sinks.py http PORT     # run the HTTP sink in this process
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count

#: Postfix's sink, written in C: it costs the benchmark's two cores almost nothing
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def start_smtp_sink(port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Postfix's smtp-sink when installed (Debian: postfix), else aiosmtpd's Sink; (process, name)."""
    try:
        process = subprocess.Popen([SMTP_SINK, "-u", "postfix", "-m", "64", f"127.0.0.1:{port}", "256"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = "postfix smtp-sink"
    except FileNotFoundError:
        process = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                                    "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        name = "aiosmtpd Sink"
    wait_listening(port)
    return process, name


def start_http_sink(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, "http", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_listening(port)
    return process


class _Provider(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the adapter reuses its connection
    # a reply written as headers and then body waits for the client's delayed ACK (40 ms on Linux)
    # between the two under Nagle's algorithm, which capped a connection at about 10 requests a second
    disable_nagle_algorithm = True
    ids = count(1)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"id": f"sms-{next(self.ids)}"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__" and sys.argv[1:2] == ["http"]:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), _Provider).serve_forever()
