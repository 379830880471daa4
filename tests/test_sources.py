"""Sources other than google: urls files, folders, Bing on a saved results page; bad input; dvc repro."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline import download, sources
from pipeline.__main__ import main
from pipeline.errors import PipelineError
from pipeline.params import DownloadParams, from_defaults, params_from_dict
from tests.conftest import make_project, sh, write_params
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


def test_bing_parses_a_saved_results_page_with_icrawler(monkeypatch):
    from icrawler.utils import Session

    asked = []

    def fake_get(self, url, **kwargs):  # only the network fetch of the results page is replaced
        asked.append(url)
        return SimpleNamespace(
            status_code=200, content=FIXTURE.read_bytes().replace(b"LOOPBACK", b"http://h")
        )

    monkeypatch.setattr(Session, "get", fake_get)
    tasks = sources.bing("super mario", from_defaults(DownloadParams, source="bing", limit=10))
    assert asked == ["https://www.bing.com/images/async?q=super mario&first=0"]
    # icrawler's parser keeps .jpg results only, cut at ".jpg".
    assert [(t.url, t.page_url) for t in tasks] == [
        ("http://h/img/0.jpg", "http://h/pages/0.html"),
        ("http://h/bing/mario.jpg", "http://h/pages/1.html"),
        ("http://h/html.jpg", "http://h/pages/2.html"),
    ]
    assert {(t.query, t.source) for t in tasks} == {("super mario", "bing")}


def test_bing_with_no_results_says_so(monkeypatch, caplog):
    from icrawler.utils import Session

    monkeypatch.setattr(Session, "get", lambda self, url, **kw: SimpleNamespace(content=b"<html></html>"))
    assert sources.bing("mario", from_defaults(DownloadParams, source="bing", limit=5)) == []
    assert "bing: 0 results for query 'mario'" in caplog.text


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


@pytest.mark.e2e
def test_urls_folder_and_bing_through_dvc_repro(server, tmp_path):
    root = make_project(tmp_path / "proj")
    (root / "urls.txt").write_text(f"{server.url('/img/0.jpg')}\n{server.url('/img/2.gif')}\n")
    (root / "mine").mkdir()
    (root / "mine/x.png").write_bytes(image_bytes("PNG", (70, 70)))
    search = server.url("/search?q={query}&first={offset}")
    runs = {
        "urls": {"source": "urls", "urls_file": "urls.txt"},
        "folder": {"source": "folder", "folder": "mine"},
        "bing": {"source": "bing", "queries": ["mario"], "limit": 5, "search_url": search},
    }
    for name, extra in runs.items():
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["download"].update(extra)
        (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
        sh("dvc", "repro", "download", cwd=root)
        index = rows(root / "data/raw/index.csv")
        assert index and {r["source"] for r in index} == {name}, name
    assert [r["origin"].rsplit("/", 1)[-1] for r in index] == ["0.jpg", "mario.jpg"]
    assert rows(root / "data/raw/rejected.csv")[0]["reason"] == "HTML page, not an image"
    assert server.routes.hits["/search?q=mario&first=0"] == 1
    # Scraping again re-uses the cache: DVC deleted data/raw, nothing is downloaded twice.
    sh("dvc", "repro", "-f", "-s", "download", cwd=root)
    assert server.routes.hits["/search?q=mario&first=0"] == 2
    assert server.routes.hits["/img/0.jpg"] == server.routes.hits["/bing/mario.jpg"] == 1
    assert len(rows(root / "data/raw/index.csv")) == 2
    status = sh("git", "status", "--porcelain", "--untracked-files=all", cwd=root).stdout
    assert "data/" not in status and ".cache" not in status
    # A frozen scrape stays put while params change.
    sh("dvc", "freeze", "download", cwd=root)
    params["download"]["limit"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    out = sh("dvc", "repro", "download", cwd=root)
    assert "Running stage 'download'" not in out.stdout + out.stderr
    assert server.routes.hits["/search?q=mario&first=0"] == 2
