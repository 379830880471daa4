"""The project's own image downloader: concurrent, bounded, validated, resumable.

`Fetcher.fetch_many(tasks)` downloads image URLs with a thread pool, at most
`per_host` requests at a time to one host (host:port), with timeouts and
retries (backoff on 5xx, timeouts and connection errors; none on 4xx). Only
http and https are followed, also after a redirect. Bodies are capped at
`max_bytes` while streaming. What arrives is sniffed by Pillow (through
pipeline/images.py), never trusted from the URL or Content-Type, and stored
under a name derived from its sha256, so the same bytes are stored once.

Every outcome is appended to a log in the store, so a re-run (or a run after a
`kill -9`) skips what is already done and fetches only the rest.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from pipeline.errors import DISK_ERRNOS
from pipeline.images import FILE_MODE, ImageError, probe
from pipeline.params import DownloadParams
from pipeline.progress import progress

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
MAX_URL = 16_384  # characters; far beyond any real image URL, well within a CSV cell
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


@dataclass(frozen=True)
class Task:
    """One image URL to fetch, and where it was found."""

    url: str
    page_url: str = ""
    query: str = ""
    source: str = ""


@dataclass(frozen=True)
class Outcome:
    """What became of one Task: a stored image, or a rejection with its reason."""

    url: str
    ok: bool
    reason: str = ""
    retry: bool = False  # a transient failure: try again on the next run
    file: str = ""  # name inside the store, "<id>.<ext>"
    sha256: str = ""
    bytes: int = 0
    width: int = 0
    height: int = 0
    format: str = ""
    final_url: str = ""
    fetched_at: str = ""

    @property
    def id(self) -> str:
        return Path(self.file).stem


LOG_FIELDS = [f.name for f in fields(Outcome)]


class Rejected(Exception):
    """Refused for good: the URL, the response or the content is unusable."""


class Transient(Exception):
    """Failed for now (timeout, 5xx, connection): worth another try."""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_id(sha256: str) -> str:
    """Stable id for an image of any source but synthetic: a prefix of its sha256."""
    return f"img-{sha256[:16]}"


def sniff(data: bytes) -> None:
    """Refuse bodies that are plainly not raster images, with a reason a person understands."""
    if not data:
        raise Rejected("empty body (0 bytes)")
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        if b"<svg" in data[:4096].lower():
            raise Rejected("SVG: vector images are not supported")
        if head.startswith((b"<!doctype html", b"<html")) or b"<body" in data[:4096].lower():
            raise Rejected("HTML page, not an image")
        raise Rejected("markup (XML or HTML), not an image")


def store_image(data: bytes, store: Path, min_side: int) -> tuple[str, str, str, int, int]:
    """Validate `data` and write it atomically as store/<id>.<ext>.

    Returns (file name, sha256, format, width, height); raises Rejected. The
    bytes are decoded from a hidden temp file beside the target and renamed
    only once they pass, so a kill at any moment leaves no partial image.
    """
    sniff(data)
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fetch.", suffix=".tmp", dir=store)
    try:
        # mkstemp makes the file 0600; a stored image gets the mode the umask gives any new file.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            fmt, w, h = probe(tmp)
        except ImageError as exc:
            raise Rejected(exc.reason) from None
        if min(w, h) < min_side:
            raise Rejected(f"too small: {w}x{h} (download.min_side is {min_side})")
        sha = hashlib.sha256(data).hexdigest()
        name = f"{image_id(sha)}.{EXTENSIONS.get(fmt, fmt.lower())}"
        if not (store / name).exists():  # the same bytes from another URL: keep one file
            os.replace(tmp, store / name)
        return name, sha, fmt, w, h
    finally:
        Path(tmp).unlink(missing_ok=True)


def clean_temp(store: Path) -> int:
    """Remove temp files a killed run left behind; return how many."""
    stale = list(store.glob(".*.tmp")) if store.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def check_scheme(url: str) -> None:
    """Refuse what is not a plain http(s) URL with a host, before any connection."""
    if len(url) > MAX_URL:
        raise Rejected(f"bad URL: {len(url):,} characters (at most {MAX_URL:,})")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:  # "Invalid IPv6 URL", a bad port, ...
        raise Rejected(f"bad URL: {_short(exc)}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise Rejected(f"scheme '{parts.scheme or '(none)'}' refused: only http and https")
    if not host:
        raise Rejected("no host in URL")


class Fetcher:
    """Downloads image URLs into a content-addressed store. Thread-safe."""

    def __init__(
        self,
        store: Path,
        *,
        workers: int,
        per_host: int,
        timeout: float,
        retries: int,
        max_bytes: int,
        min_side: int,
        ca_bundle: str,
        backoff: float = 1.0,
        user_agent: str,
    ) -> None:
        self.store = Path(store)
        self.user_agent = user_agent
        self.workers = workers
        self.per_host = per_host
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_bytes = max_bytes
        self.min_side = min_side
        # "" = requests' default: certifi, or REQUESTS_CA_BUNDLE when set. Never False.
        self.verify: str | bool = ca_bundle or True
        self._local = threading.local()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    @classmethod
    def from_params(cls, store: Path, p: DownloadParams, backoff: float = 1.0) -> Fetcher:
        """A fetcher with the limits of params.yaml's `download:` section (its only defaults)."""
        return cls(
            store,
            workers=p.workers,
            per_host=p.per_host,
            timeout=p.timeout,
            retries=p.retries,
            max_bytes=p.max_bytes,
            min_side=p.min_side,
            ca_bundle=p.ca_bundle,
            backoff=backoff,
            user_agent=p.user_agent,
        )

    def _session(self) -> requests.Session:
        # One session per thread: requests.Session is not guaranteed thread-safe.
        if not hasattr(self._local, "session"):
            s = requests.Session()
            s.headers["User-Agent"] = self.user_agent
            self._local.session = s
        return self._local.session

    @contextmanager
    def _host_slot(self, url: str):
        host = urlsplit(url).netloc.lower()
        with self._slots_lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self.per_host))
        with slot:
            yield

    def _get_once(self, url: str) -> tuple[bytes, str]:
        """One attempt: follow up to MAX_REDIRECTS redirects, checking each scheme; return body."""
        for _ in range(MAX_REDIRECTS + 1):
            check_scheme(url)
            with self._host_slot(url):
                deadline = time.monotonic() + self.timeout
                try:
                    resp = self._session().get(
                        url,
                        stream=True,
                        allow_redirects=False,
                        timeout=(self.timeout, self.timeout),
                        verify=self.verify,
                    )
                except requests.exceptions.SSLError as exc:
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                        raise Transient(
                            "TLS certificate not trusted (a private CA? set download.ca_bundle)"
                        ) from None
                    raise Transient(f"TLS error: {_short(exc)}") from None
                except requests.exceptions.Timeout:
                    raise Transient(f"timeout: no answer within {self.timeout:g} s") from None
                except requests.exceptions.ConnectionError as exc:
                    raise Transient(f"connection failed: {_short(exc)}") from None
                except (requests.exceptions.RequestException, ValueError, UnicodeError) as exc:
                    # urllib3's LocationParseError is a ValueError; an over-long host label a UnicodeError.
                    raise Rejected(f"bad URL: {_short(exc)}") from None
                with resp:
                    if resp.is_redirect:
                        try:
                            url = urljoin(url, resp.headers["location"])
                        except ValueError as exc:
                            raise Rejected(f"bad redirect: {_short(exc)}") from None
                        continue
                    if resp.status_code >= 500:
                        raise Transient(f"HTTP {resp.status_code}")
                    if resp.status_code != 200:
                        raise Rejected(f"HTTP {resp.status_code}")
                    return self._read(resp, deadline), url
        raise Rejected(f"more than {MAX_REDIRECTS} redirects")

    def _read(self, resp: requests.Response, deadline: float) -> bytes:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise Rejected(f"too large: {declared} bytes (download.max_bytes is {self.max_bytes})")
        body = bytearray()
        try:
            for chunk in resp.iter_content(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    raise Rejected(f"too large: over download.max_bytes ({self.max_bytes} bytes)")
                if time.monotonic() > deadline:
                    raise Transient(f"timeout: body not complete after {self.timeout:g} s")
        except (requests.exceptions.RequestException, OSError) as exc:
            raise Transient(f"transfer failed: {_short(exc)}") from None
        return bytes(body)

    def fetch(self, task: Task) -> Outcome:
        """Download, validate and store one URL; never raises for a bad URL or body."""
        attempts = 1 + self.retries
        for attempt in range(attempts):
            try:
                data, final = self._get_once(task.url)
                name, sha, fmt, w, h = store_image(data, self.store, self.min_side)
            except Rejected as exc:
                return Outcome(task.url, False, str(exc), fetched_at=now())
            except Transient as exc:
                if attempt + 1 == attempts:
                    return Outcome(task.url, False, str(exc), retry=True, fetched_at=now())
                time.sleep(self.backoff * 2**attempt)
                continue
            except OSError as exc:  # our own disk full or read-only: stop the run (one line, in __main__)
                if exc.errno in DISK_ERRNOS:
                    raise
                return Outcome(task.url, False, f"failed: {_short(exc)}", retry=True, fetched_at=now())
            except Exception as exc:  # one odd URL must never stop the others
                # Anything a library raises for a URL we did not foresee: refused, with what it said.
                return Outcome(
                    task.url, False, f"bad URL: {type(exc).__name__}: {_short(exc)}", fetched_at=now()
                )
            return Outcome(task.url, True, "", False, name, sha, len(data), w, h, fmt, final, now())
        raise AssertionError("unreachable")

    def fetch_many(self, tasks: Sequence[Task], desc: str = "download") -> list[Outcome]:
        """Fetch `tasks` concurrently; return outcomes in task order, logging each as it ends."""
        out: list[Outcome | None] = [None] * len(tasks)
        with (
            ThreadPoolExecutor(max_workers=self.workers) as pool,
            progress(total=len(tasks), desc=desc, unit="img") as bar,
            Log(self.store) as log,
        ):
            futures = {pool.submit(self.fetch, t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futures):
                outcome = fut.result()
                out[futures[fut]] = outcome
                log.write(outcome)
                bar.update()
        return [o for o in out if o is not None]


class Log:
    """Append-only record of outcomes in the store, flushed line by line."""

    def __init__(self, store: Path) -> None:
        self.path = Path(store) / "fetched.csv"

    def __enter__(self) -> Log:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a+", encoding="utf-8", errors="backslashreplace", newline="")
        if not new:
            # A run killed mid-line leaves no newline: start on a fresh line.
            self._fh.seek(self._fh.tell() - 1)
            if self._fh.read(1) != "\n":
                self._fh.write("\n")
        self._writer = csv.DictWriter(self._fh, fieldnames=LOG_FIELDS, lineterminator="\n")
        if new:
            self._writer.writeheader()
        return self

    def write(self, outcome: Outcome) -> None:
        if len(outcome.url) > MAX_URL:
            return  # refused again in no time; kept out so every line stays readable as CSV
        self._writer.writerow(asdict(outcome))
        self._fh.flush()

    def __exit__(self, *exc) -> None:
        self._fh.close()


def read_log(store: Path) -> dict[str, Outcome]:
    """Latest usable outcome per URL: stored images whose file is still there, and
    permanent rejections. Transient failures and torn lines are left out, so
    those URLs are fetched again."""
    path = Path(store) / "fetched.csv"
    done: dict[str, Outcome] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for row in _rows(csv.DictReader(fh)):
            if any(row.get(k) is None for k in LOG_FIELDS) or row["ok"] not in ("True", "False"):
                continue  # a line torn by a kill
            try:
                o = Outcome(
                    url=row["url"],
                    ok=row["ok"] == "True",
                    reason=row["reason"],
                    retry=row["retry"] == "True",
                    file=row["file"],
                    sha256=row["sha256"],
                    bytes=int(row["bytes"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    format=row["format"],
                    final_url=row["final_url"],
                    fetched_at=row["fetched_at"],
                )
            except ValueError:
                continue
            if o.ok and not (Path(store) / o.file).is_file():
                done.pop(o.url, None)
            elif o.ok or not o.retry:
                done[o.url] = o
            else:
                done.pop(o.url, None)
    return done


def _rows(reader: csv.DictReader) -> Iterator[dict[str, str]]:
    """The reader's rows, skipping any it cannot parse (an over-long cell): one bad line
    must not stop a run, since its URL is simply fetched again."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error:
            continue


def unique(tasks: Iterable[Task]) -> list[Task]:
    """Drop repeated URLs, keeping the first (its query and page)."""
    seen: set[str] = set()
    out = []
    for t in tasks:
        if t.url not in seen:
            seen.add(t.url)
            out.append(t)
    return out


def shown(url: str) -> str:
    """The URL as reports record it: cut when over MAX_URL, so every report stays readable CSV."""
    return url if len(url) <= MAX_URL else f"{url[:200]}... ({len(url):,} characters)"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
