"""What every image search engine adapter shares: the result type, one HTTP GET
with rate-limit handling, and the loop that pages until enough or nothing new.

An engine module (bing, ddg, openverse) has `pages(query, p)`, a generator of
Page objects, one per results page it asked for; `collect()` decides when to
stop asking. Anything that stops an engine for good (blocked, rate limited
after the retries, an answer we cannot read) is an EngineError: one line that
says which engine, what happened and what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import requests

from pipeline import contracts
from pipeline.errors import PipelineError
from pipeline.fetch import Task
from pipeline.params import DownloadParams

log = logging.getLogger(__name__)

# Licence facts some engines know (openverse), stored in data/raw/index.csv for every
# source; empty where an engine does not know them.
LICENCE_FIELDS = contracts.LICENCE_COLUMNS[1:]  # (the first is the title)
# A Retry-After longer than this is not waited for: the run stops with a clear line instead.
MAX_WAIT = 120.0


@dataclass(frozen=True)
class Hit(Task):
    """One image a search engine found: the URL to fetch plus what the engine said about it."""

    title: str = ""
    license: str = ""
    license_version: str = ""
    license_url: str = ""
    creator: str = ""
    attribution: str = ""


@dataclass
class Page:
    """One results page as the engine returned it."""

    status: int
    hits: list[Hit] = field(default_factory=list)
    more: bool = True  # False when the engine said this was the last page


class EngineError(PipelineError):
    """An engine cannot be used now: blocked, rate limited, or its answer is unreadable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def network_reason(text: str) -> str:
    """A short reason for a failed connection, from a client library's long message."""
    low = text.lower()
    for needles, reason in (
        (
            ("nameresolution", "failed to resolve", "name or service not known", "dns"),
            "host name not resolved",
        ),
        (("connection refused", "connecterror", "refused"), "connection refused"),
        (("timed out", "timeout"), "no answer in time"),
        (("certificate", "ssl", "tls"), "TLS error (a private CA? set download.ca_bundle)"),
    ):
        if any(n in low for n in needles):
            return reason
    return text.splitlines()[0][:120] if text else "connection failed"


def retry_after(value: str | None, default: float) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); `default` if absent or odd."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def get(
    session: requests.Session,
    engine: str,
    url: str,
    p: DownloadParams,
    *,
    params: dict | None = None,
    headers: dict | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """GET a results page; wait and retry on 429/503 (Retry-After honoured) and connection errors.

    Returns the response for any other status; the engine decides what it means.
    """
    for attempt in range(p.retries + 1):
        last = attempt == p.retries
        try:
            resp = session.get(
                url, params=params, headers=headers, timeout=p.timeout, verify=p.ca_bundle or True
            )
        except requests.exceptions.RequestException as exc:
            if last:
                why = network_reason(f"{type(exc).__name__}: {exc}")
                raise EngineError(f"{engine}: cannot reach {url} ({why})") from None
            sleep(2.0**attempt)
            continue
        if resp.status_code not in (429, 503):
            return resp
        wait = retry_after(resp.headers.get("Retry-After"), 2.0 ** (attempt + 1))
        if last or wait > MAX_WAIT:
            hint = f"asked to wait {wait:.0f} s" if resp.headers.get("Retry-After") else "no Retry-After"
            raise EngineError(
                f"{engine}: rate limited (HTTP {resp.status_code}, {hint}; tried {attempt + 1}x); "
                "wait and run again, or use another download.source",
                resp.status_code,
            )
        log.info("%s: HTTP %d, waiting %.0f s before trying again", engine, resp.status_code, wait)
        sleep(wait)
    raise AssertionError("unreachable")


def collect(engine: str, pages: Iterator[Page], limit: int) -> list[Hit]:
    """Hits from successive pages until `limit`, the last page, or a page with nothing new."""
    hits: list[Hit] = []
    seen: set[str] = set()
    for page in pages:
        new = 0
        for h in page.hits:
            if h.url not in seen:  # also a URL twice on one page
                seen.add(h.url)
                hits.append(h)
                new += 1
        if len(hits) >= limit or not new or not page.more:
            break
    return hits[:limit]


def keep_licensed(hits: list[Task], licenses: list[str]) -> tuple[list[Task], int]:
    """Hits whose licence is in `licenses` (all when empty), and how many were dropped.

    A result with no licence information (every source but openverse) is dropped by a filter.
    """
    if not licenses:
        return hits, 0
    allowed = {x.lower() for x in licenses}
    kept = [h for h in hits if getattr(h, "license", "").lower() in allowed]
    return kept, len(hits) - len(kept)
