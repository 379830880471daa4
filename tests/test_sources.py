"""Sources other than google: urls files, folders, several engines in one run, licences; bad input; dvc repro."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import download, sources
from pipeline.__main__ import main
from pipeline.errors import PipelineError
from pipeline.params import DownloadParams, defaults, from_defaults, params_from_dict
from pipeline.search import LICENCE_FIELDS
from tests.conftest import make_project, sh, write_params
from tests.engines import TunnelProxy, bing_pages, ddg_routes, fixture, openverse_pages
from tests.loopback import Routes, Server, image_bytes

FIXTURE = Path(__file__).parent / "fixtures/bing_async.html"


def rows(path) -> list[dict]:
    return list(csv.DictReader(open(path, encoding="utf-8")))


@pytest.fixture
def server():
    routes = Routes()
    routes.add("/bing/mario.jpg", image_bytes("JPEG", (120, 90), (250, 0, 0)), "image/jpeg")
    with Server(routes) as s:
        page = FIXTURE.read_text().replace("LOOPBACK", s.url("")).encode()
        routes.add("/search", page, "text/html")
        yield s


def test_urls_text_file_with_optional_page_column(tmp_path):
    f = tmp_path / "urls.txt"
    f.write_text(
        "# exported from a browser\nhttp://a/1.jpg http://a/page\n\n  https://b/2.png\nfile:///etc/x\n"
    )
    tasks = sources.urls(from_defaults(DownloadParams, source="urls", urls_file=str(f)))
    assert [(t.url, t.page_url) for t in tasks] == [
        ("http://a/1.jpg", "http://a/page"),
        ("https://b/2.png", ""),
        ("file:///etc/x", ""),  # kept: the downloader refuses it, with a reason in rejected.csv
    ]
    assert {t.source for t in tasks} == {"urls"}


def test_urls_csv_with_and_without_header(tmp_path):
    f = tmp_path / "urls.csv"
    f.write_text('\ufefftitle,page_url,url\nMario,http://a/p,"http://a/1.jpg?w=1,h=2"\r\n')
    assert [(t.url, t.page_url) for t in sources.urls(from_defaults(DownloadParams, urls_file=str(f)))] == [
        ("http://a/1.jpg?w=1,h=2", "http://a/p")
    ]
    f.write_text("http://a/1.jpg,http://a/p\nhttp://a/2.jpg\n")
    assert [(t.url, t.page_url) for t in sources.urls(from_defaults(DownloadParams, urls_file=str(f)))] == [
        ("http://a/1.jpg", "http://a/p"),
        ("http://a/2.jpg", ""),
    ]


def test_urls_source_writes_index_duplicates_rejections_and_resumes(server, in_tmp):
    good = ["/img/0.jpg", "/img/1.png", "/img/3.webp", "/dup/a.png", "/dup/b.png"]
    bad = ["/html.jpg", "/missing.jpg", "/tiny.png"]
    lines = [f"{server.url(p)} {server.url('/page' + p)}" for p in good + bad] + ["file:///etc/passwd"]
    Path("urls.txt").write_text("\n".join(lines) + "\n")
    params = params_from_dict({"download": {"source": "urls", "urls_file": "urls.txt", "retries": 0}})
    index = download.run(params)
    assert len(index) == 4  # a.png and b.png are the same bytes
    raw = Path("data/raw")
    assert rows(raw / "index.csv") == [{k: str(v) for k, v in r.items()} for r in index]
    first = index[0]
    assert first["id"].startswith("img-") and first["source"] == "urls"
    assert first["origin"] == server.url("/img/0.jpg") and first["page_url"] == server.url("/page/img/0.jpg")
    assert first["format"] == "JPEG" and (first["width"], first["height"]) == (96, 80)
    assert {r["file"] for r in index} == {p.name for p in raw.glob("img-*")}
    urls = rows(raw / "urls.csv")
    assert len(urls) == 5 and urls[3]["id"] == urls[4]["id"]
    rejected = {r["url"].rsplit("/", 1)[-1]: r["reason"] for r in rows(raw / "rejected.csv")}
    assert rejected == {
        "html.jpg": "HTML page, not an image",
        "missing.jpg": "HTTP 404",
        "tiny.png": "too small: 16x16 (download.min_side is 64)",
        "passwd": "scheme 'file' refused: only http and https",
    }
    report = json.loads((raw / "report.json").read_text())
    assert report["images"] == 4 and report["rejected"] == 4
    assert not (raw / "ground_truth.csv").exists()

    # DVC deletes data/raw before a run; the cache means nothing is fetched again.
    shutil.rmtree(raw)
    hits = sum(server.routes.hits.values())
    assert download.run(params) == index
    assert sum(server.routes.hits.values()) == hits
    assert rows(raw / "rejected.csv") and len(list(raw.glob("img-*"))) == 4


def test_folder_source_imports_checked_images(in_tmp):
    src = Path("mine")
    (src / "sub/deeper").mkdir(parents=True)
    (src / ".hidden").mkdir()
    (src / "a.png").write_bytes(image_bytes("PNG", (100, 100)))
    (src / "sub/copy-of-a.png").write_bytes(image_bytes("PNG", (100, 100)))
    (src / "sub/deeper/b.jpg").write_bytes(image_bytes("JPEG", (80, 120)))
    (src / "sub/page.jpg").write_bytes(b"<html><body>saved page</body></html>")
    (src / "tiny.gif").write_bytes(image_bytes("GIF", (10, 10)))
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden/c.png").write_bytes(image_bytes("PNG", (90, 90), (0, 0, 0)))
    index = download.run(params_from_dict({"download": {"source": "folder", "folder": "mine"}}))
    assert [r["origin"] for r in index] == ["mine/a.png", "mine/sub/deeper/b.jpg"]
    assert {r["source"] for r in index} == {"folder"}
    assert len(rows("data/raw/urls.csv")) == 3
    rejected = {Path(r["url"]).name: r["reason"] for r in rows("data/raw/rejected.csv")}
    assert rejected == {
        "page.jpg": "HTML page, not an image",
        "tiny.gif": "too small: 10x10 (download.min_side is 64)",
    }
    assert not Path(".cache").exists()


@pytest.mark.parametrize(
    ("download_params", "message"),
    [
        ({"source": "urls", "urls_file": "nope.txt"}, "params.yaml: download.urls_file: nope.txt not found"),
        ({"source": "bing", "queries": []}, "params.yaml: download.queries: must list at least one query"),
        ({"source": "altavista"}, "params.yaml: download.source: must be one of synthetic, google, bing"),
        (
            {"source": "folder", "folder": "nowhere"},
            "params.yaml: download.folder: nowhere is not a directory",
        ),
        ({"source": "urls"}, "params.yaml: download.urls_file: must name a file"),
        ({"queries": "mario"}, "params.yaml: download.queries: must be a list"),
        (
            {"source": ["bing", "folder"]},
            "params.yaml: download.source: only google, bing, ddg, openverse, urls",
        ),
        ({"source": ["bing", "bing"]}, "params.yaml: download.source: lists a source twice"),
        ({"source": []}, "params.yaml: download.source: must be one of"),
        (
            {"source": ["bing", "openverse"], "search_url": "http://x/"},
            "params.yaml: download.search_url: is one URL but download.source lists several engines",
        ),
        (
            {"source": "bing", "search_url": {"yahoo": "http://x/"}},
            "params.yaml: download.search_url.yahoo: unknown",
        ),
        (
            {"source": "ddg", "search_url": {"ddg": "http://x/"}},
            "params.yaml: download.search_url.ddg: ddg takes no URL",
        ),
        (
            {"source": "google", "search_url": "http://x/"},
            "params.yaml: download.search_url: must contain {query}",
        ),
        (
            {"source": "openverse", "search_url": "ftp://x/"},
            "params.yaml: download.search_url: must be the http(s) URL",
        ),
        (
            {"source": "bing", "search_url": "http://x/s?q={query}&first={offset}"},
            "params.yaml: download.search_url: must be the http(s) URL of the engine's endpoint (the query is added",
        ),
        ({"market": "en_US!"}, "params.yaml: download.market: must be a market code like en-US"),
        ({"licenses": "cc0"}, "params.yaml: download.licenses: must be a list of licence codes"),
        (
            {"licenses": ["cc0", "cc-by"]},
            "params.yaml: download.licenses: unknown licence code 'cc-by'; use by,",
        ),
        ({"user_agent": "two\nlines"}, "params.yaml: download.user_agent: must be one line"),
    ],
)
def test_bad_input_gives_one_clear_error_line(in_tmp, capsys, download_params, message):
    write_params(Path("."), {"download": download_params})
    assert main(["download"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_every_image_rejected_is_an_error(server, in_tmp):
    Path("urls.txt").write_text(server.url("/html.jpg") + "\n")
    with pytest.raises(PipelineError, match="no usable images"):
        download.run(params_from_dict({"download": {"source": "urls", "urls_file": "urls.txt"}}))
    assert rows("data/raw/rejected.csv")[0]["reason"] == "HTML page, not an image"


def engines_on_loopback(server, duck_routes, base: str) -> dict:
    """bing, ddg and openverse fixture pages on loopback; returns download.search_url for them."""
    bing_pages(server.routes, base, {1: fixture("bing_async.html", base)})
    openverse_pages(server.routes, base, {1: json.loads(fixture("openverse_page1.json", base))})
    ddg_routes(duck_routes, {0: fixture("ddg_i_page1.json", base)})
    server.routes.add("/ov/mario-cc0.png", image_bytes("PNG", (90, 90), (9, 9, 9)))
    server.routes.add("/ov/mario-by-sa.jpg", image_bytes("JPEG", (90, 90), (9, 99, 9)), "image/jpeg")
    server.routes.add("/ddg/mario-1.jpg", image_bytes("JPEG", (91, 90), (99, 9, 9)), "image/jpeg")
    server.routes.add("/bing/luigi.jpeg", image_bytes("JPEG", (92, 90), (0, 200, 0)), "image/jpeg")
    return {"bing": server.url("/bing/async"), "openverse": server.url("/v1/images/")}


@pytest.fixture
def duck(tmp_path, monkeypatch):
    with TunnelProxy(tmp_path / "tls", ["duckduckgo.com"]) as proxy:
        monkeypatch.setenv("DDGS_PROXY", proxy.url)
        monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
        yield proxy


def test_three_engines_in_one_run_share_urls_and_bytes_and_keep_licences(server, duck, in_tmp):
    urls = engines_on_loopback(server, duck.routes, server.url(""))
    params = {"source": ["bing", "ddg", "openverse"], "queries": ["mario"], "search_url": urls}
    params |= {"ca_bundle": str(duck.ca), "retries": 0}
    index = download.run(params_from_dict({"download": params}))
    raw = Path("data/raw")
    got = {r["origin"].removeprefix(server.url("")): r for r in rows(raw / "index.csv")}
    # /img/0.jpg: bing found it first, openverse too; fetched once, kept as bing's.
    assert got["/img/0.jpg"]["source"] == "bing" and server.routes.hits["/img/0.jpg"] == 1
    # /ov/mario-cc0.png: ddg found it before openverse; the licence is openverse's only.
    assert got["/ov/mario-cc0.png"]["source"] == "ddg" and got["/ov/mario-cc0.png"]["license"] == ""
    by_sa = got["/ov/mario-by-sa.jpg"]
    assert (by_sa["source"], by_sa["license"], by_sa["license_version"]) == ("openverse", "by-sa", "4.0")
    assert by_sa["creator"] == "Ana Example" and by_sa["page_url"] == server.url("/ov/landing/2")
    assert by_sa["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0/"
    assert by_sa["attribution"].startswith('"Mario cosplay" by Ana Example is licensed under CC BY-SA 4.0')
    assert got["/bing/luigi.jpeg"]["title"] == "Luigi & Mario"
    assert {r["source"] for r in index} == {"bing", "ddg", "openverse"}
    assert list(rows(raw / "index.csv")[0])[-6:] == ["title", *LICENCE_FIELDS]
    # a.png and b.png: one file; non-images and data: URLs rejected with reasons.
    rejected = {r["url"].removeprefix(server.url("")): r["reason"] for r in rows(raw / "rejected.csv")}
    assert rejected["/html.jpg"] == "HTML page, not an image"
    assert rejected["/ddg/not-an-image"] == "HTTP 404"
    assert rejected["data:image/png;base64,iVBORw0KGgo="].startswith("scheme 'data' refused")
    report = json.loads((raw / "report.json").read_text())
    assert report["engines"] == {"bing": "ok", "ddg": "ok", "openverse": "ok"}
    agents = {h["User-Agent"] for p, h in server.routes.requests if p.startswith(("/img/", "/v1/images/"))}
    assert agents == {defaults()["download"]["user_agent"]}  # images and openverse: the project's agent


def test_licence_filter_keeps_only_those_licences(server, duck, in_tmp, caplog):
    caplog.set_level("INFO", "pipeline")
    urls = engines_on_loopback(server, duck.routes, server.url(""))
    params = {"source": ["bing", "openverse"], "queries": ["mario"], "search_url": urls, "retries": 0}
    index = download.run(params_from_dict({"download": params | {"licenses": ["cc0", "by-sa"]}}))
    assert sorted((r["origin"].rsplit("/", 1)[1], r["license"]) for r in index) == [
        ("mario-by-sa.jpg", "by-sa"),
        ("mario-cc0.png", "cc0"),
    ]
    assert not server.routes.hits["/img/1.png"]  # bing results have no licence: never fetched
    assert "bing: mario: 9 of 9 results left out: licence not in download.licenses" in caplog.text
    with pytest.raises(
        PipelineError, match=r"none of the 9 results has a licence in download.licenses \['pdm'\]"
    ):
        download.run(params_from_dict({"download": params | {"source": ["bing"], "licenses": ["pdm"]}}))


def test_a_blocked_engine_is_one_line_and_the_others_go_on(server, duck, in_tmp, caplog):
    urls = engines_on_loopback(server, duck.routes, server.url(""))
    challenge = (FIXTURE.parent / "bing_challenge.html").read_bytes()
    server.routes.pages["/bing/async"] = lambda h: (200, challenge, "text/html", {})
    params = {
        "source": ["bing", "openverse"],
        "queries": ["mario", "luigi"],
        "search_url": urls,
        "retries": 0,
    }
    index = download.run(params_from_dict({"download": params}))
    assert {r["source"] for r in index} == {"openverse"}
    blocked = [r.message for r in caplog.records if r.message.startswith("bing: blocked")]
    assert len(blocked) == 1  # bing is not asked again for 'luigi'
    report = json.loads(Path("data/raw/report.json").read_text())
    assert report["engines"]["bing"].startswith(
        "bing: blocked: Bing answered with a challenge (CAPTCHA) page"
    )
    server.routes.pages["/v1/images/"] = lambda h: (429, b"", "text/plain", {"Retry-After": "0"})
    with pytest.raises(PipelineError) as err:
        download.run(params_from_dict({"download": params}))
    assert str(err.value).startswith(
        "download: bing: blocked"
    ) and "; openverse: rate limited (HTTP 429" in str(err.value)
    assert "\n" not in str(err.value)


def test_sources_check_prints_one_row_per_engine(server, duck, in_tmp, capsys):
    urls = engines_on_loopback(server, duck.routes, server.url(""))
    server.routes.pages["/v1/images/"] = lambda h: (200, b"{oops", "application/json", {})
    params = {
        "source": ["bing", "ddg", "openverse"],
        "search_url": urls,
        "ca_bundle": str(duck.ca),
        "retries": 0,
    }
    write_params(Path("."), {"download": params})
    assert main(["sources", "check", "--query", "luigi"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["engine", "status", "results", "first", "URL", "or", "reason"]
    table = {ln.split()[0]: ln.split(maxsplit=3)[1:] for ln in lines[1:]}
    assert table["bing"] == ["200", "9", server.url("/img/0.jpg")]
    assert table["ddg"] == ["200", "4", server.url("/ddg/mario-1.jpg")]
    assert table["openverse"][:2] == ["200", "0"]
    assert table["openverse"][2].startswith("openverse: the answer is not the JSON of Openverse's API")
    assert query_of(server.routes.requests[0][0])["q"] == "luigi"


def query_of(path: str) -> dict[str, str]:
    from urllib.parse import parse_qs, urlsplit

    return {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}


@pytest.mark.e2e
def test_urls_folder_and_three_engines_through_dvc_repro(server, duck, tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    (root / "urls.txt").write_text(f"{server.url('/img/0.jpg')}\n{server.url('/img/2.gif')}\n")
    (root / "mine").mkdir()
    (root / "mine/x.png").write_bytes(image_bytes("PNG", (70, 70)))
    urls = engines_on_loopback(server, duck.routes, server.url(""))
    engines = {"source": ["bing", "ddg", "openverse"], "queries": ["mario"], "limit": 6, "search_url": urls}
    runs = {
        "urls": {"source": "urls", "urls_file": "urls.txt"},
        "folder": {"source": "folder", "folder": "mine"},
        "engines": engines | {"ca_bundle": str(duck.ca), "retries": 0},
    }
    for name, extra in runs.items():
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["download"].update(extra)
        (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
        sh("dvc", "repro", "download", cwd=root)
        index = rows(root / "data/raw/index.csv")
        assert index and {r["source"] for r in index} <= {name, "bing", "ddg", "openverse"}, name
    assert {r["source"] for r in index} == {"bing", "ddg", "openverse"}
    assert list(index[0])[-6:] == ["title", *LICENCE_FIELDS]
    licensed = [r for r in index if r["license"]]
    assert licensed and all(
        r["source"] == "openverse" and r["attribution"] and r["page_url"] for r in licensed
    )
    # limit 6: bing's first page (9 results) is enough; openverse's page 2 is refused: the end.
    assert [p for p in server.routes.hits if p.startswith("/bing/async")] == [
        "/bing/async?q=mario&async=content&first=1&count=35"
    ]
    assert duck.tunnels
    # Scraping again re-uses the cache: DVC deleted data/raw, no image is downloaded twice.
    sh("dvc", "repro", "-f", "-s", "download", cwd=root)
    assert server.routes.hits["/img/0.jpg"] == 1 and server.routes.hits["/img/3.webp"] == 1
    assert len(rows(root / "data/raw/index.csv")) == len(index)
    status = sh("git", "status", "--porcelain", "--untracked-files=all", cwd=root).stdout
    assert "data/" not in status and ".cache" not in status
    # A frozen scrape stays put while params change.
    sh("dvc", "freeze", "download", cwd=root)
    params["download"]["limit"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    out = sh("dvc", "repro", "download", cwd=root)
    assert "Running stage 'download'" not in out.stdout + out.stderr
