"""TLS on loopback for tests: self-signed certificates for 127.0.0.1, an HTTPS server that notes
what it was sent, and a CONNECT proxy that notes where it was asked to go."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def self_signed(folder: Path, name: str = "cert") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (`NAME.pem`, `NAME-key.pem`), trusted by the
    tests alone; each call makes a new key, so two calls give two unrelated certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hedgerow test {name}")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert, private = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, private


class Seen(BaseHTTPRequestHandler):
    """Answers 304 to every GET and 200 `{}` to every PUT; notes each request's method, path
    and Authorization header in `seen`."""

    seen: list[tuple[str, str, str]]

    def do_GET(self) -> None:
        self._note()
        self.send_response(304)
        self.end_headers()

    def do_PUT(self) -> None:
        self._note()
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def _note(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on `seen`."""


@contextmanager
def https_server(cert: Path, key: Path) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """`https://127.0.0.1:PORT` presenting `cert`, and the requests it received (`Seen`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen: list[tuple[str, str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Seen,), {"seen": seen}))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        serving.join()


@contextmanager
def connect_proxy() -> Iterator[tuple[str, list[str]]]:
    """`http://127.0.0.1:PORT`, an HTTP proxy that tunnels CONNECT (only), and the targets it
    was asked for. TLS goes through it end to end: it never sees a certificate or a header."""
    targets: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def tunnel(client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := client.recv(4096)):
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            targets.append(f"{method} {target}")
            host, _, port = target.rpartition(":")
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
                back.start()
                pipe(client, upstream)
                back.join()

    def accept() -> None:
        with suppress(OSError):  # the listener is closed: stop
            while True:
                client, _ = listener.accept()
                thread = threading.Thread(target=tunnel, args=(client,), daemon=True)
                threads.append(thread)
                thread.start()

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", targets
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        listener.close()
        accepting.join()
        for thread in threads:
            thread.join(5)
