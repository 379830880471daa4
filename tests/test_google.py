"""The google source: the real google-images-download driving real headless Chromium, on loopback pages."""

from __future__ import annotations

import contextlib
import csv
import os
import socket
import time
from pathlib import Path

import pytest
import yaml

from pipeline import download, sources
from pipeline.errors import PipelineError
from pipeline.params import DownloadParams, from_defaults, params_from_dict
from pipeline.search import EngineError
from tests.conftest import make_project, sh
from tests.loopback import Routes, Server, make_tls

CHROMEDRIVER = Path("/usr/bin/chromedriver")
needs_chromium = pytest.mark.skipif(
    not CHROMEDRIVER.exists(), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


def results_page(image_urls: list[tuple[str, str]]) -> bytes:
    """A page shaped like Google's: image URLs in script data, each with its page ("ru") nearby.

    The library looks 1000 characters around each URL for its metadata, so
    results are padded apart.
    """
    pad = "x" * 1200
    data = "".join(f'["{img}",600,400],{{"ru":"{page}","pt":"Mario"}},"{pad}",' for img, page in image_urls)
    return f"<!doctype html><html><body><script>var AF_data=[{data}];</script></body></html>".encode()


def test_missing_chromedriver_says_what_to_install(tmp_path):
    p = from_defaults(DownloadParams, source="google", chromedriver=str(tmp_path / "chromedriver"))
    with pytest.raises(PipelineError) as err:
        sources.google("mario", p)
    msg = str(err.value)
    assert "download.chromedriver" in msg and "apt-get install chromium chromium-driver" in msg
    assert "\n" not in msg


@needs_chromium
def test_browser_that_cannot_start_is_one_error_not_an_exit(tmp_path):
    p = from_defaults(DownloadParams, source="google", chrome=str(tmp_path / "no-such-chromium"))
    with pytest.raises(
        PipelineError, match=r"google: could not start the browser .*install Chrome or Chromium"
    ):
        sources.google("mario", p)


def test_changed_results_page_gives_zero_results_not_silence(tmp_path, monkeypatch, in_tmp, caplog):
    from google_images_download.google_images_download import googleimagesdownload

    driver = tmp_path / "chromedriver"
    driver.write_text("#!/bin/sh\n")
    driver.chmod(0o755)
    # Only the browser is replaced: it returns a page with no image results.
    monkeypatch.setattr(
        googleimagesdownload, "download_extended_page", lambda self, url, cd: "<html>new</html>"
    )
    params = params_from_dict(
        {"download": {"source": "google", "queries": ["mario", "luigi"], "chromedriver": str(driver)}}
    )
    with pytest.raises(PipelineError, match=r"google: 0 results for every query \('mario', 'luigi'\)"):
        download.run(params)
    assert "google: 0 results for query 'mario'" in caplog.text
    assert "google: 0 results for query 'luigi'" in caplog.text


FIXTURES = Path(__file__).parent / "fixtures"
BLOCKED = {
    "google_consent.html": r"^google: blocked: Google showed the headless browser its cookie consent page "
    r"\(\"Before you continue\"\), not results; use download.source bing, ddg or openverse instead$",
    "google_sorry.html": r"^google: blocked: Google answered the headless browser with its \"unusual traffic\" "
    r"CAPTCHA page, not results; use download.source bing, ddg or openverse instead$",
}


@pytest.mark.parametrize("page", sorted(BLOCKED))
def test_consent_and_captcha_pages_are_one_line_each(tmp_path, monkeypatch, in_tmp, caplog, page):
    from google_images_download.google_images_download import googleimagesdownload

    driver = tmp_path / "chromedriver"
    driver.write_text("#!/bin/sh\n")
    driver.chmod(0o755)
    html = (FIXTURES / page).read_text()
    # Only the browser is replaced: it "loaded" Google's block page.
    monkeypatch.setattr(googleimagesdownload, "download_extended_page", lambda self, url, cd: html)
    p = from_defaults(DownloadParams, source="google", chromedriver=str(driver))
    with pytest.raises(EngineError, match=BLOCKED[page]):
        sources.google("mario", p)
    # In a run, the line is the whole story, and google is not asked again for the next query.
    params = {"source": "google", "queries": ["mario", "luigi"], "chromedriver": str(driver)}
    with pytest.raises(PipelineError, match=BLOCKED[page].replace("^", "^download: ")):
        download.run(params_from_dict({"download": params}))
    assert [r.message for r in caplog.records if "blocked" in r.message] == [
        r.message for r in caplog.records if "google" in r.message
    ]
    assert len([r for r in caplog.records if "blocked" in r.message]) == 1


def test_result_pages_are_not_taken_for_block_pages():
    assert sources.google_blocked(results_page([("https://a/1.jpg", "https://a/p")]).decode()) == ""
    assert sources.google_blocked("<html><body>Mario consent form fan art</body></html>") == ""
    links = '<a href="https://consent.google.com/ml?continue=x">Privacy</a> <a href="/sorry/index">?</a>'
    assert sources.google_blocked(f"<html><body>{links}</body></html>") == ""


@needs_chromium
def test_real_browser_on_a_captcha_page_stops_with_one_line(tmp_path):
    with Server(Routes()) as web:
        web.routes.add("/sorry/index", (FIXTURES / "google_sorry.html").read_bytes(), "text/html")
        p = from_defaults(
            DownloadParams, source="google", search_url=web.url("/sorry/index?continue={query}"), limit=5
        )
        with pytest.raises(EngineError, match=BLOCKED["google_sorry.html"]):
            sources.google("mario", p)
        assert web.routes.hits["/sorry/index?continue=mario"] == 1


def test_chromiums_own_error_page_is_a_load_error():
    # As Chromium 150 renders it (seen for an unsafe port): body.neterror and its loadTimeData.
    page = '<body class="neterror"><div class="error-code">ERR_UNSAFE_PORT</div><script>var loadTimeDataRaw = {"details":"Details","errorCode":"ERR_UNSAFE_PORT"};</script>'
    assert sources.load_error(page) == "net::ERR_UNSAFE_PORT"
    assert sources.load_error(results_page([("https://a/1.jpg", "https://a/p")]).decode()) == ""


def descendants() -> set[int]:
    """Processes started by this test process, children of children included (from /proc)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [os.getpid()]
    while todo:
        here = todo.pop()
        kids = [pid for pid, pp in parent.items() if pp == here]
        found.update(kids)
        todo += kids
    return found


@needs_chromium
def test_page_that_cannot_load_is_one_line_and_leaves_no_browser_running():
    why = "ERR_CONNECTION_REFUSED"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = descendants()
    url = f"http://127.0.0.1:{port}/search?q={{query}}"
    with pytest.raises(
        EngineError, match=rf"^google: the browser could not load the results page \(net::{why}\)$"
    ):
        sources.google("mario", from_defaults(DownloadParams, source="google", search_url=url))
    time.sleep(0.5)
    assert descendants() <= before


@pytest.mark.e2e
@needs_chromium
def test_google_through_dvc_repro(tmp_path):
    ca, cert, key = make_tls(tmp_path / "tls")
    with Server(cert=cert, key=key) as images, Server(Routes()) as web:
        found = [
            (images.url("/img/0.jpg"), images.url("/pages/0.html")),
            (images.url("/img/3.webp"), images.url("/pages/3.html")),
            (images.url("/html.jpg"), images.url("/pages/html.html")),
        ]
        web.routes.add("/search", results_page(found), "text/html")
        root = make_project(
            tmp_path / "proj",
            {
                "download": {
                    "source": "google",
                    "queries": ["super mario"],
                    "limit": 10,
                    "search_url": web.url("/search?q={query}"),
                    "ca_bundle": str(ca),
                }
            },
        )
        sh("dvc", "repro", "download", cwd=root)
    assert web.routes.hits["/search?q=super%20mario"] == 1
    assert set(images.routes.hits) == {"/img/0.jpg", "/img/3.webp", "/html.jpg"}
    index = list(csv.DictReader(open(root / "data/raw/index.csv")))
    assert [(r["origin"], r["page_url"]) for r in index] == found[:2]
    assert {(r["source"], r["query"]) for r in index} == {("google", "super mario")}
    assert [r["format"] for r in index] == ["JPEG", "WEBP"]
    assert all((root / "data/raw" / r["file"]).exists() for r in index)
    rejected = list(csv.DictReader(open(root / "data/raw/rejected.csv")))
    assert [(r["url"], r["reason"]) for r in rejected] == [(found[2][0], "HTML page, not an image")]
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["download"]["params"]["params.yaml"]["download"]["source"] == "google"
