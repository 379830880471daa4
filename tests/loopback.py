"""HTTP(S) servers on 127.0.0.1 for download tests: good images, and every way a download goes wrong.

No test ever contacts anything but these servers.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF"}


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (96, 80), colour: tuple = (200, 40, 0)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, colour)
    img.putpixel((1, 1), (0, 0, 255))
    img.save(buf, fmt)
    return buf.getvalue()


def bomb_png(side: int = 40_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels: over Pillow's MAX_IMAGE_PIXELS."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side // 8 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def good_images() -> dict[str, bytes]:
    """One image per common format, each with different pixels."""
    return {
        f"/img/{i}.{ext}": image_bytes(fmt, (96 + i, 80), (40 * i, 120, 200 - 20 * i))
        for i, (ext, fmt) in enumerate(FORMATS.items())
    }


class Routes:
    """What the server answers; tests add to `files` and read `hits`."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: Counter = Counter()
        self.delay = 0.0  # seconds added to every response
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0  # most requests served at once
        for path, data in good_images().items():
            self.files[path] = (data, "image/" + path.rsplit(".", 1)[1])
        png = image_bytes("PNG", (70, 70), (1, 2, 3))
        self.files["/dup/a.png"] = (png, "image/png")
        self.files["/dup/b.png"] = (png, "image/png")
        self.files["/html.jpg"] = (b"<!DOCTYPE html><html><body>Not found</body></html>", "image/jpeg")
        self.files["/vector.png"] = (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            "image/png",
        )
        self.files["/empty.jpg"] = (b"", "image/jpeg")
        self.files["/truncated.jpg"] = (image_bytes("JPEG", (200, 200))[:300], "image/jpeg")
        self.files["/tiny.png"] = (image_bytes("PNG", (16, 16)), "image/png")
        self.files["/bomb.png"] = (bomb_png(), "image/png")
        self.files["/huge.jpg"] = (b"\xff\xd8" + b"\0" * 300_000, "image/jpeg")
        # path -> answer(handler) returning (status, body, content type, headers): pages that
        # depend on the query string or the request headers (search engines' results).
        self.pages: dict = {}
        self.requests: list = []  # (path with query, headers) of every request, in order

    def add(self, path: str, data: bytes, ctype: str = "image/png") -> str:
        self.files[path] = (data, ctype)
        return path


def _handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain", headers=None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if not (headers or {}).get("no-length"):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The client may read the last byte, free its slot and send its next request before this
            # thread runs again; counted after the write, a capped client could look one over its cap.
            self._leave()
            self.wfile.write(body)

        def _leave(self) -> None:
            with routes.lock:
                if self.counted:
                    routes.inflight -= 1
                    self.counted = False

        def do_GET(self) -> None:
            with routes.lock:
                routes.inflight += 1
                routes.max_inflight = max(routes.max_inflight, routes.inflight)
                self.counted = True
            try:
                self._get()
            finally:
                self._leave()

        def do_POST(self) -> None:
            self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def _get(self) -> None:
            path = self.path.split("?", 1)[0]
            with routes.lock:
                routes.hits[self.path] += 1
                hits = routes.hits[self.path]
                routes.requests.append((self.path, dict(self.headers)))
            if routes.delay:
                time.sleep(routes.delay)
            if path in routes.pages:
                code, body, ctype, headers = routes.pages[path](self)
                return self._send(code, body, ctype, headers)
            if path.startswith("/flaky/"):  # 500 first, then the image
                if hits == 1:
                    return self._send(500, b"try later")
                path = path.replace("/flaky/", "/img/", 1)
            if path.startswith("/always500"):
                return self._send(503, b"down")
            if path.startswith("/slow/"):  # longer than the test's timeout
                time.sleep(float(path.split("/")[2]))
                path = "/img/0.jpg"
            if path.startswith("/redirect/"):  # a chain of n hops to a good image
                n = int(path.split("/")[2])
                target = f"/redirect/{n - 1}" if n > 1 else "/img/1.png"
                return self._send(302, headers={"Location": target})
            if path == "/to-file":
                return self._send(302, headers={"Location": "file:///etc/passwd"})
            if path == "/stream-huge.jpg":  # no Content-Length: the cap must hold while streaming
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                try:
                    for _ in range(100):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
                return None
            if path in routes.files:
                data, ctype = routes.files[path]
                return self._send(200, data, ctype)
            return self._send(404, b"not found")

    return Handler


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hang up on purpose (size caps, timeouts); tracebacks would be noise


class Server:
    """A threaded server on 127.0.0.1 with a free port; https when given a cert and key."""

    def __init__(self, routes: Routes | None = None, cert: Path | None = None, key: Path | None = None):
        self.routes = routes or Routes()
        self.httpd = _Quiet(("127.0.0.1", 0), _handler(self.routes))
        self.scheme = "http"
        if cert and key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_tls(dest: Path, hosts: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (and `hosts`) signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    span = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=2))

    def build(subject, issuer, pub, signer, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(span[0])
            .not_valid_after(span[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        )
        if ca:
            usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=False)
        else:
            usage = dict(key_cert_sign=False, crl_sign=False, digital_signature=True)
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), *map(x509.DNSName, hosts)]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        b = b.add_extension(
            x509.KeyUsage(
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mario-gan test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    leaf = build(leaf_name, ca_name, key.public_key(), ca_key, ca=False)
    dest.mkdir(parents=True, exist_ok=True)
    paths = dest / "ca.pem", dest / "cert.pem", dest / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths
