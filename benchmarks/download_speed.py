"""Downloader throughput: pipeline.fetch.Fetcher vs a sequential urllib loop.

The baseline is the loop google-images-download runs for each result:
urlopen, read, write the body to a file named from the URL. Both fetch the
same 200 images (plus 10 broken responses: HTML pages served as .jpg and
truncated JPEGs) from 8 loopback servers, in another process, that wait
100 ms before every answer, like a distant host. Afterwards every stored file
is decoded by Pillow; "corrupt" counts stored files that are not whole images.

    .venv/bin/python benchmarks/download_speed.py [--images 200] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import Request, urlopen

from PIL import Image

from pipeline.fetch import Fetcher, Task
from pipeline.images import ImageError, probe
from pipeline.params import DownloadParams, from_defaults

HOSTS = 8


def _jpeg(i: int) -> bytes:
    img = Image.new("RGB", (256, 192), (i % 256, (7 * i) % 256, 90))
    img.paste((255, 255 - i % 256, 0), (10 + i % 200, 20, 40 + i % 200, 90))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _serve(n_images: int, n_broken: int, latency: float, ports: mp.Queue) -> None:
    files = {f"/img/{i}.jpg": _jpeg(i) for i in range(n_images)}
    for i in range(n_broken):
        bad = b"<!doctype html><html><body>503 busy</body></html>" if i % 2 else _jpeg(i)[:500]
        files[f"/broken/{i}.jpg"] = bad

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(latency)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    servers = []
    for _ in range(HOSTS):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.request_queue_size = 64
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        ports.put(httpd.server_address[1])
    threading.Event().wait()


def _corrupt(files: list[Path]) -> int:
    bad = 0
    for f in files:
        try:
            probe(f)
        except ImageError:
            bad += 1
    return bad


def sequential(urls: list[str], out: Path) -> list[Path]:
    """google-images-download's loop: one urlopen after another, body saved under the URL's name."""
    saved = []
    for i, url in enumerate(urls):
        try:
            req = Request(url, headers={"User-Agent": "Mozilla/5.0"})
            with urlopen(req, None, 10) as resp:
                data = resp.read()
        except OSError:
            continue
        path = out / f"{i + 1}.{url.rsplit('/', 1)[1]}"
        path.write_bytes(data)
        saved.append(path)
    return saved


def concurrent(urls: list[str], out: Path) -> list[Path]:
    fetcher = Fetcher.from_params(out, from_defaults(DownloadParams, min_side=32))
    outcomes = fetcher.fetch_many([Task(u) for u in urls], desc="fetcher")
    return sorted({out / o.file for o in outcomes if o.ok})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--broken", type=int, default=10)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds the server waits per request")
    args = ap.parse_args()

    ports: mp.Queue = mp.Queue()
    server = mp.Process(target=_serve, args=(args.images, args.broken, args.latency, ports), daemon=True)
    server.start()
    hosts = [f"http://127.0.0.1:{ports.get(timeout=30)}" for _ in range(HOSTS)]
    urls = [f"{hosts[i % HOSTS]}/img/{i}.jpg" for i in range(args.images)]
    urls += [f"{hosts[i % HOSTS]}/broken/{i}.jpg" for i in range(args.broken)]
    urls = urls[::2] + urls[1::2]  # broken ones are spread out, not all at the end

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in [
            ("sequential urllib (baseline)", sequential),
            ("pipeline.fetch.Fetcher", concurrent),
        ]:
            out = Path(tmp) / name.split()[0]
            out.mkdir()
            t0 = time.perf_counter()
            files = fn(urls, out)
            dt = time.perf_counter() - t0
            corrupt = _corrupt(files)
            good = len(files) - corrupt
            rows.append((name, len(urls), len(files), corrupt, dt, good / dt))
    server.terminate()

    print(f"\n{len(urls)} URLs ({args.images} images, {args.broken} broken) from {HOSTS} loopback hosts, ")
    print(f"{args.latency * 1000:.0f} ms latency each; Fetcher defaults: 16 workers, 4 per host\n")
    print(f"{'method':<30} {'urls':>5} {'stored':>7} {'corrupt':>8} {'seconds':>8} {'img/s':>8}")
    for name, n, stored, corrupt, dt, rate in rows:
        print(f"{name:<30} {n:>5} {stored:>7} {corrupt:>8} {dt:>8.2f} {rate:>8.1f}")
    print(f"ratio: {rows[1][5] / rows[0][5]:.1f}")


if __name__ == "__main__":
    main()
