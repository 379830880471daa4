"""DuckDuckGo image search through the maintained `ddgs` package (no key).

ddgs asks duckduckgo.com for a per-query token (`vqd`), then `i.js` for JSON
results: `image`, `url` (the page), `title`, `thumbnail`, `width`, `height`,
`source`; about 100 a page. We use its DuckDuckGo images engine directly
rather than the `DDGS` front end, which folds "blocked", "rate limited" and
"no results" into one "No results found." exception; the subclass below only
keeps the HTTP status of each answer so those cases can be told apart.

DuckDuckGo rate-limits by answering 403 (or 429), or a page without the token;
each is retried with backoff (`download.retries`), then becomes one line.
The ddgs client impersonates a browser itself. It honours `DDGS_PROXY` (its
own setting) for a proxy, and download.ca_bundle for a private CA.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from pipeline.params import DownloadParams
from pipeline.search import EngineError, Hit, Page, network_reason

log = logging.getLogger(__name__)

BACKOFF = 2.0  # seconds before the first retry; doubled each time


def _engine(p: DownloadParams):
    from ddgs.engines.duckduckgo_images import DuckduckgoImages

    class Images(DuckduckgoImages):
        status = 0

        def request(self, *args, **kwargs):
            resp = self.http_client.request(*args, **kwargs)
            self.status = resp.status_code
            return resp.text if resp.status_code == 200 else None

    return Images(
        proxy=os.environ.get("DDGS_PROXY"), timeout=max(1, round(p.timeout)), verify=p.ca_bundle or True
    )


def _str(value) -> str:
    return "" if value is None else str(value)


def pages(query: str, p: DownloadParams) -> Iterator[Page]:
    from ddgs.exceptions import DDGSException

    engine = _engine(p)
    page = 1
    while True:
        why = ""
        for attempt in range(p.retries + 1):
            engine.status = 0
            try:
                found = engine.search(query, region=_region(p), page=page)
            except ValueError:
                raise EngineError(
                    "ddg: the results answer is not the JSON ddgs expects (DuckDuckGo may have changed it)",
                    engine.status,
                ) from None
            except DDGSException as exc:
                text = str(exc)
                if "vqd" in text:
                    why = "no search token (vqd) in DuckDuckGo's answer"
                else:
                    why = "cannot reach DuckDuckGo: " + network_reason(text)
                found = None
            if found is not None:
                break
            if engine.status and engine.status != 200:
                why = f"HTTP {engine.status}"
            if attempt < p.retries:
                wait = BACKOFF * 2**attempt
                log.info("ddg: %s; waiting %.0f s before trying again", why, wait)
                time.sleep(wait)
        else:
            what = why if why.startswith("cannot reach") else f"rate limited or blocked ({why})"
            raise EngineError(
                f"ddg: {what} (tried {p.retries + 1}x); wait and run again, or use another download.source",
                engine.status,
            )
        hits = [
            Hit(
                url=_str(r.image).strip(),
                page_url=_str(r.url),
                query=query,
                source="ddg",
                title=_str(r.title),
            )
            for r in found
            if _str(r.image).strip()
        ]
        yield Page(engine.status, hits, more=bool(found))
        page += 1


def _region(p: DownloadParams) -> str:
    """DuckDuckGo's region code for a market: en-US -> us-en."""
    lang, _, country = p.market.lower().partition("-")
    return f"{country}-{lang}" if country else "wt-wt"
