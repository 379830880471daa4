"""Where image URLs come from: google, bing and urls find URLs; folder finds local files.

Search engines are used for discovery only. Every URL they return is fetched
by pipeline/fetch.py, so all sources share one set of checks.

- google: google-images-download 3.x drives headless Chrome/Chromium through
  chromedriver. It prints instead of raising and calls sys.exit() when the
  browser can't start; `google()` turns that into one PipelineError.
- bing: icrawler's BingImageCrawler feeder and parser; its downloader is
  replaced by one that only collects the URLs.
- urls: a text file (URL and optional page URL per line) or a CSV.
- folder: image files under a directory tree.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import logging
import os
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import PipelineError
from pipeline.fetch import Task
from pipeline.images import IMAGE_SUFFIXES
from pipeline.params import DownloadParams

log = logging.getLogger(__name__)

# Flags google-images-download does not set: without the background-networking
# ones, Chromium keeps calling Google's services on its own.
CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FOLDER_SUFFIXES = IMAGE_SUFFIXES | {".svg"}


def zero_results(source: str, query: str) -> str:
    return f"{source}: 0 results for query {query!r}"


# --- google ---------------------------------------------------------------


def _install_hint(p: DownloadParams) -> str:
    return (
        "install Chrome or Chromium and a matching chromedriver "
        "(Debian/Ubuntu: apt-get install chromium chromium-driver), then set "
        f"download.chromedriver to the chromedriver path (now {p.chromedriver!r})"
        + (f" and download.chrome to the browser (now {p.chrome!r})" if p.chrome else "")
    )


@contextlib.contextmanager
def _chrome_options(binary: str):
    """Make the library's `Options()` carry our flags and browser path.

    google-images-download builds its own selenium Options inside
    download_extended_page(); it imports the class at call time, so swapping
    the module attribute for the call is enough.
    """
    import selenium.webdriver.chrome.options as mod

    base = mod.Options

    class Options(base):
        def __init__(self) -> None:
            super().__init__()
            for flag in CHROME_FLAGS:
                if flag not in self.arguments:
                    self.add_argument(flag)
            if binary:
                self.binary_location = binary

    mod.Options = Options
    try:
        yield
    finally:
        mod.Options = base


def _google_class():
    from google_images_download.google_images_download import googleimagesdownload

    class Search(googleimagesdownload):
        """The library, with an optional search-page URL and its found items kept."""

        def __init__(self, url_template: str) -> None:
            super().__init__()
            self.url_template = url_template
            self.items: list[dict] = []

        def build_search_url(self, search_term, params, url, similar_images, specific_site, safe_search):
            if self.url_template:
                return self.url_template.format(query=quote(search_term))
            return super().build_search_url(
                search_term, params, url, similar_images, specific_site, safe_search
            )

        def _get_all_items(self, page, main_directory, dir_name, limit, arguments):
            items, errors, paths = super()._get_all_items(page, main_directory, dir_name, limit, arguments)
            self.items.extend(items)
            return items, errors, paths

    return Search


def google(query: str, p: DownloadParams) -> list[Task]:
    """Image URLs (with their page URLs) for one query, from google-images-download."""
    driver = Path(p.chromedriver)
    if not (driver.is_file() and os.access(driver, os.X_OK)):
        raise PipelineError(
            f"params.yaml: download.chromedriver: no chromedriver at that path; {_install_hint(p)}"
        )
    if "," in query:
        # The library splits its keywords on commas into separate searches.
        raise PipelineError(
            f"params.yaml: download.queries: {query!r} has a comma; list each search separately"
        )
    search = _google_class()(p.search_url)
    args = {
        "keywords": query,
        "limit": p.limit,
        "no_download": True,
        "silent_mode": True,
        "chromedriver": str(driver),
    }
    printed = io.StringIO()
    try:
        with _chrome_options(p.chrome), contextlib.redirect_stdout(printed):
            search.download(args)
    except SystemExit:
        # The library printed "... (exception: Message: session not created\nfrom ...)".
        said = printed.getvalue().partition("(exception:")[2]
        lines = [ln.split("; For documentation")[0].strip(" )") for ln in said.splitlines()[:2]]
        why = "; ".join(ln for ln in lines if ln and ln != "Stacktrace:")[:200] or "it exited"
        raise PipelineError(
            f"download: google: could not start the browser ({why}); {_install_hint(p)}"
        ) from None
    finally:
        for line in printed.getvalue().splitlines():
            if line.strip():
                log.debug("google-images-download: %s", line)
    tasks = [
        Task(it["image_link"], it.get("image_source") or "", query, "google")
        for it in search.items
        if it.get("image_link")
    ]
    if not tasks:
        log.warning(
            "%s (the results page had no image URLs: has Google changed its page?)",
            zero_results("google", query),
        )
    return tasks


# --- bing -------------------------------------------------------------------


def bing(query: str, p: DownloadParams) -> list[Task]:
    """Image URLs for one query from icrawler's Bing feeder and parser."""
    from icrawler import Crawler, Downloader
    from icrawler.builtin.bing import BingFeeder, BingParser
    from icrawler.storage import BaseStorage

    template = p.search_url

    class Feeder(BingFeeder):
        def feed(self, keyword, offset, max_num, filters=None):
            if not template:
                return super().feed(keyword, offset, max_num, filters)
            for first in range(offset, offset + max_num, 20):
                self.out_queue.put(template.format(query=quote(keyword), offset=first))

    class Parser(BingParser):
        def parse(self, response):
            # Keep the page each image is on; icrawler's parser yields the image URL only.
            pages = _bing_pages(response.content)
            for task in super().parse(response):
                url = task["file_url"]
                task["page_url"] = next((pg for img, pg in pages if img.startswith(url)), "")
                yield task

    class Collect(Downloader):
        def __init__(self, thread_num, signal, session, storage, sink):
            super().__init__(thread_num, signal, session, storage)
            self.sink = sink

        def download(self, task, default_ext, timeout=5, max_retry=3, overwrite=False, **kwargs):
            with self.lock:
                if self.fetched_num >= self.max_num:
                    self.signal.set(reach_max_num=True)
                    return False
                self.sink.append(task)
                self.fetched_num += 1
                if self.fetched_num >= self.max_num:
                    self.signal.set(reach_max_num=True)
            return True

    class NoStorage(BaseStorage):
        def write(self, id, data):
            raise AssertionError("bing is for URL discovery only")

        def exists(self, id):
            return False

        def max_file_idx(self):
            return 0

    found: list[dict] = []
    quiet = [logging.getLogger(n) for n in ("feeder", "parser", "downloader", "icrawler.crawler")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        crawler = Crawler(
            feeder_cls=Feeder,
            parser_cls=Parser,
            downloader_cls=Collect,
            storage=NoStorage(),
            extra_downloader_args={"sink": found},
        )
        crawler.crawl(
            feeder_kwargs={"keyword": query, "offset": 0, "max_num": p.limit},
            parser_kwargs={"queue_timeout": 1, "req_timeout": p.timeout},
            downloader_kwargs={"max_num": p.limit, "queue_timeout": 1},
        )
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    tasks = [Task(t["file_url"], t.get("page_url", ""), query, "bing") for t in found]
    if not tasks:
        log.warning("%s (no results page could be read, or it listed no images)", zero_results("bing", query))
    return tasks


def _bing_pages(content: bytes) -> list[tuple[str, str]]:
    """(image URL, page URL) pairs from the `m` metadata of a Bing results page."""
    from bs4 import BeautifulSoup

    pairs = []
    soup = BeautifulSoup(content.decode("utf-8", "ignore"), "lxml")
    for div in soup.find_all("div", class_="imgpt"):
        a = div.find("a")
        try:
            meta = json.loads(html.unescape(a["m"]))
        except (TypeError, KeyError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("murl"):
            pairs.append((str(meta["murl"]), str(meta.get("purl") or "")))
    return pairs


# --- urls -------------------------------------------------------------------


def urls(p: DownloadParams) -> list[Task]:
    """Tasks from download.urls_file: `URL [PAGE_URL]` per line, or a CSV.

    A .csv may have a header naming `url` (or `image_url`) and `page_url`
    (or `page`); without one, the first column is the image URL and the
    second the page. Blank lines and lines starting with # are skipped.
    """
    path = Path(p.urls_file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PipelineError(
            f"params.yaml: download.urls_file: {path} not found; make a text file with one image URL per line"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"params.yaml: download.urls_file: cannot read {path} ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if path.suffix.lower() == ".csv":
        rows = [[c.strip() for c in row] for row in csv.reader(lines)]
        url_col, page_col = 0, 1
        if rows and "://" not in rows[0][0]:
            header = [c.lower() for c in rows.pop(0)]
            url_col = next((header.index(k) for k in ("url", "image_url", "origin") if k in header), 0)
            page_col = next((header.index(k) for k in ("page_url", "page") if k in header), -1)
    else:
        rows = [ln.split() for ln in lines]
        url_col, page_col = 0, 1
    tasks = [
        Task(row[url_col], row[page_col] if 0 <= page_col < len(row) else "", "", "urls")
        for row in rows
        if len(row) > url_col and row[url_col]
    ]
    if not tasks:
        raise PipelineError(
            f"params.yaml: download.urls_file: {path} lists no URLs; add one image URL per line"
        )
    return tasks


# --- folder -----------------------------------------------------------------


def printable(path: Path) -> str:
    """The path as text that can be written to a UTF-8 file.

    os.walk gives a file name that is not valid UTF-8 as a str with surrogate
    escapes, which no UTF-8 writer accepts; its undecodable bytes are shown as
    backslash escapes instead (b"caf\\xe9.jpg" -> "caf\\xe9.jpg"). The file itself is
    read through the original path, and stored under its content hash.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def folder(p: DownloadParams) -> list[Path]:
    """Image files (by extension) under download.folder, in a stable order; hidden ones skipped."""
    root = Path(p.folder)
    if not root.is_dir():
        raise PipelineError(
            f"params.yaml: download.folder: {root} is not a directory; point it at your images"
        )
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and path.suffix.lower() in FOLDER_SUFFIXES and path.is_file():
                found.append(path)
                if printable(path) != str(path):
                    log.warning("folder: %s: file name is not UTF-8; recorded as shown", printable(path))
    if not found:
        raise PipelineError(
            f"params.yaml: download.folder: no image files under {root} "
            f"(looked for {', '.join(sorted(FOLDER_SUFFIXES))})"
        )
    return found
