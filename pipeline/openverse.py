"""Openverse: openly licensed images with their licence, from its public API.

`GET https://api.openverse.org/v1/images/?q=…&page=N&page_size=20` answers
JSON (Openverse's OpenAPI schema): `result_count`, `page_count`, `page`, and
`results`, each with `url` (the image), `foreign_landing_url` (its page),
`title`, `creator`, `license` (a code: by, by-sa, cc0, pdm, …),
`license_version`, `license_url` and `attribution` (a ready credit line).

No key is needed. Anonymous requests are limited in rate and page depth; with
OPENVERSE_CLIENT_ID and OPENVERSE_CLIENT_SECRET in the environment (from
POST /v1/auth_tokens/register/) we get a bearer token first, for the higher
limits. A 429 is waited out as its Retry-After says (pipeline/search.py).
`download.licenses` is passed on as the API's own `license` filter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from urllib.parse import urljoin

import requests

from pipeline.params import DownloadParams
from pipeline.search import EngineError, Hit, Page, get

log = logging.getLogger(__name__)

URL = "https://api.openverse.org/v1/images/"
PAGE_SIZE = 20  # the most an anonymous request may ask for


def _token(session: requests.Session, url: str, p: DownloadParams) -> str:
    cid, secret = os.environ.get("OPENVERSE_CLIENT_ID", ""), os.environ.get("OPENVERSE_CLIENT_SECRET", "")
    if not (cid and secret):
        return ""
    token_url = urljoin(url, "../auth_tokens/token/")
    try:
        resp = session.post(
            token_url,
            data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
            timeout=p.timeout,
            verify=p.ca_bundle or True,
        )
        token = resp.json().get("access_token") if resp.status_code == 200 else None
    except (requests.exceptions.RequestException, ValueError, AttributeError):
        token = None
    if not token:
        log.warning(
            "openverse: OPENVERSE_CLIENT_ID/SECRET were refused at %s; going on anonymously (lower limits)",
            token_url,
        )
        return ""
    return str(token)


def _text(value) -> str:
    return "" if value is None else str(value)


def hit(item: dict, query: str) -> Hit | None:
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        return None
    return Hit(
        url=url.strip(),
        page_url=_text(item.get("foreign_landing_url")),
        query=query,
        source="openverse",
        title=_text(item.get("title")),
        license=_text(item.get("license")),
        license_version=_text(item.get("license_version")),
        license_url=_text(item.get("license_url")),
        creator=_text(item.get("creator")),
        attribution=_text(item.get("attribution")),
    )


def pages(query: str, p: DownloadParams) -> Iterator[Page]:
    url = p.engine_url("openverse") or URL
    with requests.Session() as session:
        session.headers["User-Agent"] = p.user_agent
        token = _token(session, url, p)
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        params = {"q": query, "page_size": PAGE_SIZE, "mature": "false"}
        if p.licenses:
            params["license"] = ",".join(x.lower() for x in p.licenses)  # codes checked in params.py
        page = 1
        while True:
            resp = get(session, "openverse", url, p, params={**params, "page": page})
            try:
                data = resp.json()
            except ValueError:
                data = None
            if resp.status_code != 200:
                detail = data.get("detail") if isinstance(data, dict) else ""
                if page > 1 and resp.status_code in (400, 401, 403):
                    # Deep pages are for authenticated clients only.
                    log.info("openverse: %r: no page %d (HTTP %d %s)", query, page, resp.status_code, detail)
                    return
                raise EngineError(
                    f"openverse: HTTP {resp.status_code} from {url}" + (f": {detail}" if detail else ""),
                    resp.status_code,
                )
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                raise EngineError(
                    "openverse: the answer is not the JSON of Openverse's API (no `results` list)",
                    resp.status_code,
                )
            hits = [h for item in data["results"] if isinstance(item, dict) and (h := hit(item, query))]
            count = data.get("page_count")
            more = bool(data["results"]) and (not isinstance(count, int) or page < count)
            yield Page(resp.status_code, hits, more=more)
            page += 1
