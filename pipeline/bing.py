"""Bing image search, read from the page its own infinite scroll loads.

`GET https://www.bing.com/images/async?q=…&async=content&first=N&count=35`
returns an HTML fragment; each result is `a.iusc` with an `m` attribute
holding compact JSON: `murl` (the image), `purl` (the page it is on), `turl`
(Bing's thumbnail) and `t` (title). This is what maintained metasearch
engines (SearXNG's bing_images) parse in 2026. Pages are asked for from
`first` = 1 upward by the number of results each page actually held (about 35).

Bing localises results by market, so the request says `download.market`
(Accept-Language and Bing's market cookies) and sends a current desktop browser's user agent:
Bing answers unknown agents with a page of no results.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from html.parser import HTMLParser

import requests

from pipeline.params import DownloadParams
from pipeline.search import EngineError, Hit, Page, get

log = logging.getLogger(__name__)

URL = "https://www.bing.com/images/async"
PAGE_SIZE = 35
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0.0.0 Safari/537.36"
)
# Seen in Bing's challenge/CAPTCHA pages served instead of results.
BLOCKED_MARKERS = ("captcha", "/challenge", "turnstile", "unusual traffic", "verify you are a human")


class _Results(HTMLParser):
    """Collects the `m` attribute of every a.iusc (HTMLParser unescapes attribute values)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        a = dict(attrs)
        if "iusc" in (a.get("class") or "").split():
            self.meta.append(a.get("m"))


def parse(html: str, query: str) -> tuple[list[Hit], int]:
    """Hits from one results fragment, and how many results there were (parsed or not)."""
    reader = _Results()
    reader.feed(html)
    reader.close()
    hits = []
    for raw in reader.meta:
        try:
            m = json.loads(raw or "")
        except ValueError:
            continue
        if not isinstance(m, dict) or not isinstance(m.get("murl"), str) or not m["murl"].strip():
            continue
        hits.append(
            Hit(
                url=m["murl"].strip(),
                page_url=str(m.get("purl") or ""),
                query=query,
                source="bing",
                title=str(m.get("t") or ""),
            )
        )
    return hits, len(reader.meta)


def headers(p: DownloadParams) -> dict[str, str]:
    lang = p.market.split("-")[0]
    market, ui = p.market.lower(), lang.lower()
    return {
        "User-Agent": BROWSER_UA,
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language": f"{p.market},{lang};q=0.9" if lang != p.market else p.market,
        # Bing's own market and UI-language cookies (what SearXNG's bing engines set).
        "Cookie": f"_EDGE_CD=m={market}&u={ui}; _EDGE_S=mkt={market}&ui={ui}",
    }


def pages(query: str, p: DownloadParams) -> Iterator[Page]:
    url = p.engine_url("bing") or URL
    first = 1
    with requests.Session() as session:
        while True:
            params = {"q": query, "async": "content", "first": first, "count": PAGE_SIZE}
            resp = get(session, "bing", url, p, params=params, headers=headers(p))
            text = resp.text
            if resp.status_code != 200:
                raise EngineError(f"bing: HTTP {resp.status_code} from {url}", resp.status_code)
            hits, found = parse(text, query)
            if not found and any(m in text.lower() for m in BLOCKED_MARKERS):
                raise EngineError(
                    "bing: blocked: Bing answered with a challenge (CAPTCHA) page instead of results; "
                    "wait, or use download.source ddg or openverse",
                    resp.status_code,
                )
            if found and not hits:
                raise EngineError(
                    f"bing: none of the {found} results on the page had readable metadata "
                    "(the `m` JSON of a.iusc); Bing's markup may have changed",
                    resp.status_code,
                )
            if found > len(hits):
                log.debug("bing: %d of %d results without usable metadata skipped", found - len(hits), found)
            yield Page(resp.status_code, hits, more=found > 0)
            first += found
