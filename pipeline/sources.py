"""Where image URLs come from: search engines and urls find URLs; folder finds local files.

Search engines are used for discovery only. Every URL they return is fetched
by pipeline/fetch.py, so all sources share one set of checks.

- google: google-images-download 3.x drives headless Chrome/Chromium through
  chromedriver. It prints instead of raising and calls sys.exit() when the
  browser can't start; `google()` turns that into one PipelineError. Google
  often shows a headless browser its consent page or its "unusual traffic"
  CAPTCHA instead of results; each is recognised and stops google with one line.
- bing, ddg, openverse: one module each (pipeline/bing.py, ddg.py,
  openverse.py), paged by pipeline/search.py.
- urls: a text file (URL and optional page URL per line) or a CSV.
- folder: image files under a directory tree.

`check()` asks each engine for one page, for `python -m pipeline sources check`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from pipeline import bing, ddg, openverse
from pipeline.errors import PipelineError
from pipeline.fetch import Task
from pipeline.images import IMAGE_SUFFIXES
from pipeline.params import ENGINES, DownloadParams
from pipeline.search import EngineError, Hit, Page, collect

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
    """Make the library's `Options()` carry our flags and browser path, and never leave a browser running.

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
    # The library quits its browser only when the page loaded; remember each one to quit it otherwise.
    import selenium.webdriver as webdriver

    chrome = webdriver.Chrome
    started = []

    class Chrome(chrome):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    webdriver.Chrome = Chrome
    try:
        yield
    finally:
        mod.Options = base
        webdriver.Chrome = chrome
        for browser in started:
            with contextlib.suppress(Exception):  # already quit by the library: nothing to do
                browser.quit()


# What Google serves a browser it does not trust, instead of results (observed
# 2024-2026): the EU cookie consent interstitial on consent.google.com, and
# the /sorry/ page with a reCAPTCHA and the words "unusual traffic".
# Markers of the pages themselves (their form and wording), not mere links to them, which a
# results page may carry.
CONSENT_MARKERS = ("consent.google.com/save", "<title>before you continue to google")
CAPTCHA_MARKERS = ("unusual traffic from your computer network", 'id="captcha-form"')
USE_INSTEAD = "use download.source bing, ddg or openverse instead"


def google_blocked(page: str) -> str:
    """One line saying how Google blocked the browser, or "" when `page` is not a block page."""
    low = page.lower()
    if any(m in low for m in CAPTCHA_MARKERS):
        return (
            'google: blocked: Google answered the headless browser with its "unusual traffic" CAPTCHA page, '
            f"not results; {USE_INSTEAD}"
        )
    if any(m in low for m in CONSENT_MARKERS):
        return (
            "google: blocked: Google showed the headless browser its cookie consent page "
            f'("Before you continue"), not results; {USE_INSTEAD}'
        )
    return ""


def load_error(page: str) -> str:
    """Chromium's own error code when it showed its network error page instead of the URL; else ""."""
    if 'class="neterror"' not in page:
        return ""
    code = re.search(r'"errorCode":"(\w+)"', page)  # Chromium's loadTimeData for the page
    return f"net::{code.group(1)}" if code else "a network error"


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

        def download_extended_page(self, url, chromedriver):
            from selenium.common.exceptions import WebDriverException

            try:
                page = super().download_extended_page(url, chromedriver)
            except WebDriverException as exc:
                why = (exc.msg or type(exc).__name__).splitlines()[0].removeprefix("unknown error: ")
                raise EngineError(
                    f"google: the browser could not load the results page ({why[:160]})"
                ) from None
            failed = load_error(page or "")
            if failed:
                raise EngineError(f"google: the browser could not load the results page ({failed})")
            blocked = google_blocked(page or "")
            if blocked:
                raise EngineError(blocked)
            return page

        def _get_all_items(self, page, main_directory, dir_name, limit, arguments):
            items, errors, paths = super()._get_all_items(page, main_directory, dir_name, limit, arguments)
            self.items.extend(items)
            return items, errors, paths

    return Search


def google(query: str, p: DownloadParams) -> list[Hit]:
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
    search = _google_class()(p.engine_url("google"))
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
        Hit(
            it["image_link"],
            it.get("image_source") or "",
            query,
            "google",
            title=it.get("image_description") or "",
        )
        for it in search.items
        if it.get("image_link")
    ]
    if not tasks:
        log.warning(
            "%s (the results page had no image URLs: has Google changed its page?)",
            zero_results("google", query),
        )
    return tasks


# --- engines --------------------------------------------------------------


def pages(engine: str, query: str, p: DownloadParams) -> Iterator[Page]:
    """Results pages of one query from bing, ddg or openverse (each in its own module)."""
    return {"bing": bing, "ddg": ddg, "openverse": openverse}[engine].pages(query, p)


def find(engine: str, query: str, p: DownloadParams) -> list[Hit]:
    """Up to download.limit image URLs for one query from one engine; EngineError if it is unusable."""
    if engine == "google":
        return google(query, p)
    hits = collect(engine, pages(engine, query, p), p.limit)
    if not hits:
        log.warning("%s (the engine listed no images for it)", zero_results(engine, query))
    return hits


def check(p: DownloadParams, query: str) -> list[dict]:
    """Ask each configured engine (all four if none is) for one page: what a person with internet sees."""
    engines = [s for s in p.sources if s in ENGINES] or list(ENGINES)
    rows = []
    for engine in engines:
        row = {"engine": engine, "status": "", "results": 0, "first URL or reason": ""}
        try:
            if engine == "google":
                hits, row["status"] = google(query, p), "(browser)"
            else:
                page = next(pages(engine, query, p), Page(0))
                hits, row["status"] = page.hits, page.status
        except EngineError as exc:
            row["status"] = exc.status or "-"
            row["first URL or reason"] = str(exc).removeprefix("download: ")
        except PipelineError as exc:
            row["first URL or reason"] = str(exc).removeprefix("download: ")
        else:
            row["results"] = len(hits)
            row["first URL or reason"] = hits[0].url if hits else "no results parsed from the answer"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    widths[cols[-1]] = 0  # the last column runs on
    lines = ["  ".join(c.ljust(widths[c]) for c in cols).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


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
