"""Loopback stand-ins for the image search engines, serving the hand-written fixtures.

- bing and openverse: pages on a tests.loopback.Server; download.search_url points at them.
- ddg: ddgs talks https to duckduckgo.com itself. The test runs an HTTP proxy on
  127.0.0.1 that answers CONNECT by speaking TLS with a certificate for
  duckduckgo.com from a throwaway CA, and serves the fixtures inside the tunnel.
  ddgs reaches it through its own documented settings (DDGS_PROXY, and a CA
  bundle as `verify`), so its real HTTP client runs unpatched.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.loopback import Routes, _handler, _Quiet, make_tls

FIXTURES = Path(__file__).parent / "fixtures"


def query(handler) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}


def fixture(name: str, base: str) -> bytes:
    """A fixture with LOOPBACK replaced by the image server's base URL."""
    return (FIXTURES / name).read_bytes().replace(b"LOOPBACK", base.encode())


def json_body(data: dict) -> bytes:
    return json.dumps(data).encode()


def bing_pages(routes: Routes, base: str, by_first: dict[int, bytes], path: str = "/bing/async") -> str:
    """Serve `by_first[first]` for /bing/async?first=N (an empty list page otherwise)."""

    def answer(h):
        body = by_first.get(int(query(h).get("first", "0")), b'<ul class="dgControl_list"></ul>')
        return 200, body, "text/html; charset=utf-8", {}

    routes.pages[path] = answer
    return path


def openverse_pages(routes: Routes, base: str, pages: dict[int, dict], path: str = "/v1/images/") -> str:
    """Serve the fixture JSON pages by `page`; a 401 past the last one, as Openverse does for anonymous deep pages."""

    def answer(h):
        n = int(query(h).get("page", "1"))
        if n not in pages:
            return (
                401,
                json_body({"detail": "Authentication credentials were not provided."}),
                "application/json",
                {},
            )
        return 200, json_body(pages[n]), "application/json", {}

    routes.pages[path] = answer
    return path


def ddg_routes(routes: Routes, results: dict[int, bytes], vqd: bool = True) -> None:
    """duckduckgo.com/ (the token page) and /i.js (results by offset `s`) inside the proxy's tunnel."""
    home = (FIXTURES / "ddg_home.html").read_bytes()
    if not vqd:
        home = home.replace(b"vqd=", b"vq_=")
    routes.pages["/"] = lambda h: (200, home, "text/html; charset=utf-8", {})

    def answer(h):
        offset = int(query(h).get("s", "0"))
        return 200, results.get(offset, b'{"results": []}'), "application/json", {}

    routes.pages["/i.js"] = answer


class TunnelProxy:
    """An HTTP proxy on 127.0.0.1 that terminates CONNECT tunnels with TLS and answers from `routes`."""

    def __init__(self, dest: Path, hosts: list[str], routes: Routes | None = None) -> None:
        self.routes = routes or Routes()
        self.ca, cert, key = make_tls(dest, tuple(hosts))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self.tunnels: list[str] = []
        base = _handler(self.routes)
        tunnels = self.tunnels

        class Handler(base):
            protocol_version = "HTTP/1.1"

            def do_CONNECT(self) -> None:
                tunnels.append(self.path)
                self.send_response(200, "Connection established")
                self.end_headers()
                conn = ctx.wrap_socket(self.connection, server_side=True)
                self.connection = conn
                self.rfile, self.wfile = conn.makefile("rb"), conn.makefile("wb")
                self.close_connection = False  # the next requests arrive inside the tunnel

        self.httpd = _Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def answer(self, path: str, fn: Callable) -> None:
        self.routes.pages[path] = fn

    def __enter__(self) -> TunnelProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
