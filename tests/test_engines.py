"""bing, ddg and openverse through their real code paths, against loopback servers and hand-written fixtures.

Nothing is patched: bing and openverse are pointed at 127.0.0.1 by
download.search_url, ddg (the ddgs package and its own HTTP client) by a
loopback proxy (DDGS_PROXY) that plays duckduckgo.com.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import bing, ddg, openverse, search, sources
from pipeline.params import DownloadParams, from_defaults
from pipeline.search import EngineError
from tests.engines import (
    FIXTURES,
    TunnelProxy,
    bing_pages,
    ddg_routes,
    fixture,
    json_body,
    openverse_pages,
)
from tests.loopback import Routes, Server, image_bytes


@pytest.fixture
def web():
    routes = Routes()
    routes.add("/bing/mario.jpg", image_bytes("JPEG", (120, 90), (250, 0, 0)), "image/jpeg")
    with Server(routes) as s:
        yield s


def bing_params(web, **kw) -> DownloadParams:
    return from_defaults(DownloadParams, source="bing", search_url=web.url("/bing/async"), retries=1, **kw)


def bing_fixture_pages(web) -> None:
    base = web.url("")
    bing_pages(
        web.routes, base, {1: fixture("bing_async.html", base), 12: fixture("bing_async_2.html", base)}
    )


# --- bing -----------------------------------------------------------------


def test_bing_reads_every_result_and_pages_by_what_each_page_held(web):
    bing_fixture_pages(web)
    hits = sources.find("bing", "super mario", bing_params(web, market="de-DE"))
    base = web.url("")
    assert [h.url.removeprefix(base) for h in hits] == [
        "/img/0.jpg",
        "/bing/mario.jpg?w=800&h=600",  # the query string is kept
        "/html.jpg",
        "/img/1.png",
        "/img/3.webp",
        "/img/2.gif",
        "/bing/luigi.jpeg",
        "/dup/a.png",
        "data:image/png;base64,iVBORw0KGgo=",  # the fetcher refuses it, with a reason
        # page 2: /img/0.jpg again is dropped
        "/dup/b.png",
        "/pages/14.html",
        "/img/5.tif",
    ]
    assert hits[0].page_url == base + "/pages/1.html" and hits[6].title == "Luigi & Mario"
    assert hits[-1].title == "マリオ TIFF"
    assert {(h.source, h.query) for h in hits} == {("bing", "super mario")}
    asked = [(query_of(p), h) for p, h in web.routes.requests if p.startswith("/bing/async")]
    # 11 results on page 1 (two unreadable), so page 2 starts at 12; page 3 is empty: the end.
    assert [q["first"] for q, _ in asked] == ["1", "12", "16"]
    q, headers = asked[0]
    assert q == {"q": "super mario", "async": "content", "first": "1", "count": "35"}
    assert headers["Accept-Language"] == "de-DE,de;q=0.9"
    assert headers["Cookie"] == "_EDGE_CD=m=de-de&u=de; _EDGE_S=mkt=de-de&ui=de"
    assert headers["User-Agent"] == bing.BROWSER_UA and "Chrome/" in headers["User-Agent"]


def query_of(path: str) -> dict[str, str]:
    from urllib.parse import parse_qs, urlsplit

    return {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}


def test_bing_stops_at_the_limit_and_when_a_page_brings_nothing_new(web):
    page = fixture("bing_async.html", web.url(""))
    web.routes.pages["/bing/async"] = lambda h: (
        200,
        page,
        "text/html",
        {},
    )  # the same page for every `first`
    assert len(sources.find("bing", "mario", bing_params(web))) == 9
    assert len(web.routes.requests) == 2
    web.routes.requests.clear()
    assert len(sources.find("bing", "mario", bing_params(web, limit=3))) == 3
    assert len(web.routes.requests) == 1


def test_bing_challenge_page_is_one_line_saying_blocked(web):
    page = (FIXTURES / "bing_challenge.html").read_bytes()
    web.routes.pages["/bing/async"] = lambda h: (200, page, "text/html", {})
    with pytest.raises(
        EngineError, match=r"^bing: blocked: .*CAPTCHA.*use download.source ddg or openverse$"
    ):
        sources.find("bing", "mario", bing_params(web))


def test_bing_markup_without_readable_metadata_says_the_markup_changed(web):
    broken = b'<ul><li><a class="iusc" m="{murl: not json}"></a></li><li><a class="iusc"></a></li></ul>'
    web.routes.pages["/bing/async"] = lambda h: (200, broken, "text/html", {})
    with pytest.raises(EngineError, match=r"none of the 2 results .* markup may have changed"):
        sources.find("bing", "mario", bing_params(web))


def test_bing_http_error_and_unreachable_are_one_line(web):
    web.routes.pages["/bing/async"] = lambda h: (403, b"Forbidden", "text/plain", {})
    with pytest.raises(EngineError, match=r"^bing: HTTP 403 from http://127\.0\.0\.1:\d+/bing/async$") as e:
        sources.find("bing", "mario", bing_params(web))
    assert e.value.status == 403
    p = from_defaults(
        DownloadParams, source="bing", search_url="http://127.0.0.1:9/none", retries=0, timeout=2
    )
    with pytest.raises(
        EngineError, match=r"^bing: cannot reach http://127\.0\.0\.1:9/none \(connection refused\)$"
    ):
        sources.find("bing", "mario", p)


@given(st.lists(st.text(max_size=30), max_size=6), st.text(max_size=40))
def test_bing_parser_never_raises_on_odd_markup(values, junk):
    """Any attribute text, escaped or not, gives hits only for JSON objects with a string murl."""
    items = "".join(
        f'<a class="iusc x" m="{v.replace("&", "&amp;").replace(chr(34), "&quot;")}">' for v in values
    )
    hits, found = bing.parse(f"<ul>{junk}{items}</ul>", "q")
    assert found >= len(hits) and all(h.url.strip() == h.url and h.url for h in hits)


# --- rate limits (shared by bing and openverse) ---------------------------


def test_429_waits_as_long_as_retry_after_says_then_goes_on(web):
    page = fixture("bing_async.html", web.url(""))
    calls = []

    def answer(h):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, b"slow down", "text/plain", {"Retry-After": "1"}
        return 200, page if len(calls) == 2 else b"<ul></ul>", "text/html", {}

    web.routes.pages["/bing/async"] = answer
    assert len(sources.find("bing", "mario", bing_params(web))) == 9
    assert calls[1] - calls[0] >= 0.95


def test_429_every_time_or_a_long_retry_after_is_one_line(web):
    web.routes.pages["/bing/async"] = lambda h: (429, b"", "text/plain", {"Retry-After": "0"})
    with pytest.raises(
        EngineError, match=r"^bing: rate limited \(HTTP 429, asked to wait 0 s; tried 2x\); wait"
    ):
        sources.find("bing", "mario", bing_params(web))
    assert len(web.routes.requests) == 2
    web.routes.pages["/bing/async"] = lambda h: (429, b"", "text/plain", {"Retry-After": "3600"})
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=r"asked to wait 3600 s; tried 1x"):
        sources.find("bing", "mario", bing_params(web))
    assert time.monotonic() - t0 < 5


def test_retry_after_as_seconds_or_http_date():
    assert search.retry_after("7", 1.0) == 7.0
    assert search.retry_after(None, 2.0) == 2.0 and search.retry_after("soon", 2.0) == 2.0
    assert 0 <= search.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 5.0) == 0.0


# --- openverse --------------------------------------------------------------


def openverse_params(web, **kw) -> DownloadParams:
    return from_defaults(
        DownloadParams, source="openverse", search_url=web.url("/v1/images/"), retries=1, **kw
    )


def openverse_fixture_pages(web) -> dict[int, dict]:
    base = web.url("")
    pages = {n: json.loads(fixture(f"openverse_page{n}.json", base)) for n in (1, 2)}
    openverse_pages(web.routes, base, pages)
    return pages


def test_openverse_pages_to_page_count_and_keeps_the_licence(web, monkeypatch):
    monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
    openverse_fixture_pages(web)
    hits = sources.find("openverse", "mario", openverse_params(web, user_agent="mario-gan-test (+http://x/)"))
    base = web.url("")
    assert [h.url.removeprefix(base) for h in hits] == [
        "/ov/mario-cc0.png",
        "/ov/mario-by-sa.jpg",
        "/img/0.jpg",
        "/ov/mario-pdm.gif",  # the result without a url is left out
    ]
    first = hits[0]
    assert (first.license, first.license_version, first.creator) == ("cc0", "1.0", "Jane Pixel")
    assert first.license_url == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert first.page_url == base + "/ov/landing/1" and first.title == "Mario sprite"
    assert first.attribution.startswith('"Mario sprite" by Jane Pixel is marked with CC0 1.0.')
    asked = [(query_of(p), h) for p, h in web.routes.requests]
    assert [q["page"] for q, _ in asked] == ["1", "2"]  # page 2 == page_count: no third request
    assert asked[0][0] == {"q": "mario", "page_size": "20", "mature": "false", "page": "1"}
    assert asked[0][1]["User-Agent"] == "mario-gan-test (+http://x/)" and "Authorization" not in asked[0][1]


def test_openverse_sends_the_licence_filter_and_uses_client_credentials(web, monkeypatch):
    openverse_fixture_pages(web)
    web.routes.pages["/v1/auth_tokens/token/"] = lambda h: (
        200,
        json_body({"access_token": "tok-123", "token_type": "Bearer", "expires_in": 43200}),
        "application/json",
        {},
    )
    monkeypatch.setenv("OPENVERSE_CLIENT_ID", "id-1")
    monkeypatch.setenv("OPENVERSE_CLIENT_SECRET", "secret-1")
    sources.find("openverse", "mario", openverse_params(web, licenses=["cc0", "PDM"]))
    (token_path, _), (search_path, headers) = web.routes.requests[:2]
    assert token_path == "/v1/auth_tokens/token/"
    assert query_of(search_path)["license"] == "cc0,pdm"
    assert headers["Authorization"] == "Bearer tok-123"


def test_openverse_refused_credentials_go_on_anonymously_with_one_warning(web, monkeypatch, caplog):
    openverse_fixture_pages(web)
    web.routes.pages["/v1/auth_tokens/token/"] = lambda h: (
        401,
        json_body({"error": "invalid_client"}),
        "application/json",
        {},
    )
    monkeypatch.setenv("OPENVERSE_CLIENT_ID", "id-1")
    monkeypatch.setenv("OPENVERSE_CLIENT_SECRET", "wrong")
    assert len(sources.find("openverse", "mario", openverse_params(web))) == 4
    assert all("Authorization" not in h for p, h in web.routes.requests if p.startswith("/v1/images/"))
    assert "OPENVERSE_CLIENT_ID/SECRET were refused" in caplog.text


def test_openverse_deep_page_refused_is_the_end_not_an_error(web, monkeypatch):
    monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
    pages = openverse_fixture_pages(web)
    pages[2]["page_count"] = 9  # claims more pages than an anonymous client may read
    assert len(sources.find("openverse", "mario", openverse_params(web))) == 4
    assert [query_of(p)["page"] for p, _ in web.routes.requests] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            (200, b"{not json", "application/json", {}),
            r"^openverse: the answer is not the JSON .*no `results`",
        ),
        ((200, b'{"detail": "x"}', "application/json", {}), r"no `results` list"),
        (
            (400, b'{"detail": "Invalid input: license PDMX does not exist."}', "application/json", {}),
            r"^openverse: HTTP 400 from http://127.0.0.1:\d+/v1/images/: Invalid input: license PDMX",
        ),
        ((429, b"", "text/plain", {"Retry-After": "0"}), r"^openverse: rate limited \(HTTP 429"),
    ],
)
def test_openverse_bad_answers_are_one_line(web, monkeypatch, answer, message):
    monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
    web.routes.pages["/v1/images/"] = lambda h: answer
    with pytest.raises(EngineError, match=message) as e:
        sources.find("openverse", "mario", openverse_params(web))
    assert "\n" not in str(e.value)


# --- ddg ------------------------------------------------------------------------


@pytest.fixture
def duck(tmp_path, monkeypatch):
    """A loopback duckduckgo.com behind a proxy, as ddgs is told to use one."""
    with TunnelProxy(tmp_path / "tls", ["duckduckgo.com"]) as proxy:
        monkeypatch.setenv("DDGS_PROXY", proxy.url)
        monkeypatch.setattr(ddg, "BACKOFF", 0.05)
        yield proxy


def ddg_params(proxy, **kw) -> DownloadParams:
    return from_defaults(DownloadParams, source="ddg", ca_bundle=str(proxy.ca), retries=2, **kw)


def ddg_fixture_pages(proxy, base: str) -> None:
    ddg_routes(proxy.routes, {0: fixture("ddg_i_page1.json", base), 100: fixture("ddg_i_page2.json", base)})


def test_ddg_through_ddgs_pages_until_a_page_is_empty(duck):
    base = "http://127.0.0.1:1"
    ddg_fixture_pages(duck, base)
    hits = sources.find("ddg", "mario", ddg_params(duck, market="en-GB"))
    assert [h.url.removeprefix(base) for h in hits] == [
        "/ddg/mario-1.jpg",
        "/img/1.png",
        "/ddg/not-an-image",
        "/ov/mario-cc0.png",
        "/ddg/mario-5.webp",
    ]
    assert hits[0].page_url == base + "/ddg/page/1" and hits[0].title == "Mario - Wikipedia"
    assert {(h.source, h.license) for h in hits} == {("ddg", "")}
    assert duck.tunnels and set(duck.tunnels) == {"duckduckgo.com:443"}
    asked = [query_of(p) for p, _ in duck.routes.requests if p.startswith("/i.js")]
    assert [q.get("s", "0") for q in asked] == ["0", "100", "200"]
    assert asked[0]["q"] == "mario" and asked[0]["l"] == "gb-en" and asked[0]["vqd"].startswith("4-")


def test_ddg_rate_limit_is_retried_with_backoff_then_one_line(duck):
    ddg_fixture_pages(duck, "http://127.0.0.1:1")
    duck.routes.pages["/i.js"] = lambda h: (403, b"Ratelimit", "text/plain", {})
    with pytest.raises(EngineError, match=r"^ddg: rate limited or blocked \(HTTP 403\) \(tried 3x\); wait"):
        sources.find("ddg", "mario", ddg_params(duck))
    assert sum(p.startswith("/i.js") for p, _ in duck.routes.requests) == 3


def test_ddg_recovers_when_the_rate_limit_lifts(duck):
    base = "http://127.0.0.1:1"
    ddg_fixture_pages(duck, base)
    ok = duck.routes.pages["/i.js"]
    tries = []
    duck.routes.pages["/i.js"] = lambda h: (
        (tries.append(1) or (403, b"", "text/plain", {})) if len(tries) < 1 else ok(h)
    )
    assert len(sources.find("ddg", "mario", ddg_params(duck))) == 5


def test_ddg_missing_token_and_malformed_json_are_one_line(duck):
    ddg_routes(duck.routes, {}, vqd=False)
    with pytest.raises(EngineError, match=r"^ddg: rate limited or blocked \(no search token \(vqd\)"):
        sources.find("ddg", "mario", ddg_params(duck))
    ddg_routes(duck.routes, {0: b'{"results": [}'})
    with pytest.raises(EngineError, match=r"^ddg: the results answer is not the JSON ddgs expects"):
        sources.find("ddg", "mario", ddg_params(duck))


def test_engines_are_listed_in_one_place():
    assert {m.__name__.rsplit(".", 1)[1] for m in (bing, ddg, openverse)} | {"google"} == set(sources.ENGINES)


@given(st.lists(st.lists(st.integers(0, 30), max_size=12), max_size=8), st.integers(1, 40))
def test_collect_never_repeats_a_url_never_passes_the_limit_and_stops_on_nothing_new(pages, limit):
    served = []

    def gen():
        for n, urls in enumerate(pages):
            served.append(n)
            yield search.Page(200, [search.Hit(f"http://h/{u}") for u in urls], more=n + 1 < len(pages))

    hits = search.collect("x", gen(), limit)
    urls = [h.url for h in hits]
    assert len(urls) == len(set(urls)) <= limit
    seen: set[str] = set()
    for n in served[:-1]:  # every page but the last asked-for one brought something new, under the limit
        new = {f"http://h/{u}" for u in pages[n]} - seen
        assert new and len(seen | new) < limit
        seen |= new
