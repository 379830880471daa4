"""The review server's HTTP API, through a real client against the real app."""

import csv
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline import dedup, download, paths
from pipeline.__main__ import main
from pipeline.curate import read_manifest
from pipeline.params import params_from_dict
from pipeline.review import create_app
from tests.conftest import ROOT, env, write_params

PORT = 8799
BASE = f"http://127.0.0.1:{PORT}"


def make_dataset(root: Path, count: int = 30) -> dict:
    """Download and dedup a tiny synthetic set in `root`; returns candidate ids and one duplicate group."""
    write_params(root, {"download": {"count": count}})
    params = params_from_dict({"download": {"count": count}})
    old = Path.cwd()
    os.chdir(root)
    try:
        download.run(params)
        dedup.run(params)
    finally:
        os.chdir(old)
    ids = [r["id"] for r in csv.DictReader(open(root / paths.DEDUP / "candidates.csv"))]
    members = [r for r in csv.DictReader(open(root / paths.DEDUP / "groups.csv")) if r["group"] != r["id"]]
    assert members, "the tiny set should hold at least one duplicate"
    return {"ids": ids, "member": members[0]["id"], "kept": members[0]["group"]}


def rows(root: Path) -> dict[str, str]:
    return {i: r["decision"] for i, r in read_manifest(root / paths.MANIFEST).rows.items()}


@pytest.fixture
def client(data) -> TestClient:
    return TestClient(create_app(Path.cwd(), PORT), base_url=BASE)


def decide(client: TestClient, ids: list[str], decision: str, status: int = 200) -> dict:
    r = client.post("/api/decide", json={"ids": ids, "decision": decision})
    assert r.status_code == status, r.text
    return r.json()


def test_items_show_sizes_urls_and_duplicate_groups(in_tmp, data):
    index = list(csv.DictReader(open(paths.RAW / "index.csv")))
    with open(paths.RAW / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, [*index[0], "page_url"])
        w.writeheader()
        w.writerows(r | {"page_url": f"https://example.invalid/{r['id']}"} for r in index)
    client = TestClient(create_app(in_tmp, PORT), base_url=BASE)
    items = {i["id"]: i for i in client.get("/api/items").json()["items"]}
    assert list(items) == data["ids"]
    kept = items[data["kept"]]
    assert data["member"] in [m["id"] for m in kept["members"]]
    assert kept["width"] > 0 and kept["height"] > 0 and kept["bytes"] > 0
    assert kept["origin"].startswith("synthetic://")
    assert kept["page_url"] == f"https://example.invalid/{data['kept']}"
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")


def test_each_decision_is_saved_at_once_sorted(client, data):
    a, b, c = data["ids"][:3]
    body = decide(client, [c, a], "accept")
    assert rows(Path.cwd()) == {a: "accept", c: "accept"}
    assert body["counts"] == {
        "total": len(data["ids"]),
        "accept": 2,
        "reject": 0,
        "pending": len(data["ids"]) - 2,
        "orphaned": 0,
    }
    decide(client, [b], "reject")
    text = paths.MANIFEST.read_text()
    assert text.splitlines() == ["id,decision,note", f"{a},accept,", f"{b},reject,", f"{c},accept,"]
    assert client.get("/api/state").json()["decisions"][b] == "reject"


def test_decision_on_a_duplicate_goes_to_the_kept_image(client, data):
    body = decide(client, [data["member"]], "reject")
    assert rows(Path.cwd()) == {data["kept"]: "reject"}
    assert body["decisions"][data["kept"]] == "reject"


def test_undo_over_several_steps(client, data):
    a, b, c, d = data["ids"][:4]
    decide(client, [a], "accept")
    decide(client, [a], "reject")
    decide(client, [b], "accept")
    decide(client, [c, d], "reject")  # one bulk action, one undo step
    assert client.get("/api/state").json()["undo"] == 4
    r = client.post("/api/undo", json={})
    assert r.status_code == 200 and sorted(r.json()["reverted"]) == sorted([c, d])
    assert rows(Path.cwd()) == {a: "reject", b: "accept"}
    client.post("/api/undo", json={})
    assert rows(Path.cwd()) == {a: "reject"}
    client.post("/api/undo", json={})
    assert rows(Path.cwd()) == {a: "accept"}
    client.post("/api/undo", json={})
    assert rows(Path.cwd()) == {}
    r = client.post("/api/undo", json={})
    assert r.status_code == 409 and "nothing to undo" in r.json()["error"]


def test_outside_edit_is_merged_not_overwritten(client, data):
    a, b, c = data["ids"][:3]
    decide(client, [a], "accept")
    # A spreadsheet saves the file: BOM, CRLF, an extra column, a new decision.
    paths.MANIFEST.write_bytes(
        f"\ufeffid,decision,note,who\r\n{a},accept,,me\r\n{b},reject,blurry,me\r\n".encode()
    )
    body = decide(client, [c], "accept")
    assert "merged 2 outside change" in body["message"]
    m = read_manifest(paths.MANIFEST)
    assert m.fields == ["id", "decision", "note", "who"]
    assert {i: r["decision"] for i, r in m.rows.items()} == {a: "accept", b: "reject", c: "accept"}
    assert m.rows[b]["note"] == "blurry" and m.rows[a]["who"] == "me"
    assert body["decisions"][b] == "reject"


def test_outside_edit_of_the_same_image_is_refused_then_can_be_overridden(client, data):
    a, b = data["ids"][:2]
    decide(client, [a], "accept")
    paths.MANIFEST.write_text(f"id,decision,note\n{a},reject,looked again\n")
    body = decide(client, [a, b], "accept", status=409)
    assert f"{a} is now reject" in body["error"] and "do it again to override" in body["error"]
    assert rows(Path.cwd()) == {a: "reject"}, "a refused write must leave the file alone"
    assert body["decisions"][a] == "reject", "the page is shown the file's decision"
    r = client.post("/api/undo", json={})
    assert r.status_code == 409, "undoing over an outside change must refuse too"
    assert rows(Path.cwd()) == {a: "reject"}
    decide(client, [a, b], "accept")
    assert rows(Path.cwd()) == {a: "accept", b: "accept"}
    assert read_manifest(paths.MANIFEST).rows[a]["note"] == "looked again"


def test_undo_keeps_an_outside_decision_it_did_not_make(client, data):
    a, b = data["ids"][:2]
    paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    paths.MANIFEST.write_text(f"id,decision,note\n{a},accept,from the editor\n")
    decide(client, [a, b], "accept")  # agrees with the editor on a: merged, no conflict
    client.post("/api/undo", json={})
    assert rows(Path.cwd()) == {a: "accept"}
    assert read_manifest(paths.MANIFEST).rows[a]["note"] == "from the editor"


def test_broken_manifest_on_disk_is_never_overwritten(client, data):
    a = data["ids"][0]
    broken = f"id,decision,note\n{a},acept,\n"
    paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    paths.MANIFEST.write_text(broken)
    body = decide(client, [a], "accept", status=409)
    assert "manifest.csv:2: unknown decision 'acept'" in body["error"]
    assert paths.MANIFEST.read_text() == broken


def test_unknown_ids_and_bad_bodies_are_refused(client, data):
    assert client.post("/api/decide", json={"ids": ["syn-99999"], "decision": "accept"}).status_code == 404
    assert client.post("/api/decide", json={"ids": [data["ids"][0]], "decision": "maybe"}).status_code == 422
    assert client.post("/api/decide", json={"ids": [], "decision": "accept"}).status_code == 422
    assert not paths.MANIFEST.exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Host": f"evil.example:{PORT}"},
        {"Host": "127.0.0.1:1"},
        {"Origin": "http://evil.example"},
        {"Origin": f"http://evil.example:{PORT}"},
        {"Origin": "null"},
    ],
)
def test_foreign_host_or_origin_is_rejected(client, data, headers):
    for method, path in [("GET", "/"), ("GET", "/api/state"), ("GET", f"/img/{data['ids'][0]}/thumb")]:
        assert client.request(method, path, headers=headers).status_code == 403, (method, path)
    r = client.post("/api/decide", json={"ids": [data["ids"][0]], "decision": "accept"}, headers=headers)
    assert r.status_code == 403
    assert not paths.MANIFEST.exists()


def test_own_host_and_origin_are_served(client, data):
    own = {"Host": f"localhost:{PORT}", "Origin": f"http://localhost:{PORT}"}
    assert client.get("/api/state", headers=own).status_code == 200
    decide(client, [data["ids"][0]], "accept")
    # A cross-site HTML form can post, but not JSON: refuse anything else.
    r = client.post("/api/decide", data={"ids": data["ids"][1], "decision": "accept"})
    assert r.status_code == 415
    assert rows(Path.cwd()) == {data["ids"][0]: "accept"}


@pytest.mark.parametrize(
    "path",
    [
        "/img/..%2F..%2Fparams.yaml/thumb",
        "/img/%2E%2E%2Fparams.yaml/full",
        "/img/../../params.yaml",
        "/img/params.yaml/full",
        "/img/%2Fetc%2Fpasswd/full",
        "/static/..%2Freview.py",
        "/static/index.html",
        "/static/../review.py",
        "/data/raw/index.csv",
    ],
)
def test_files_are_served_by_id_only(client, data, path):
    r = client.get(path)
    assert r.status_code in (404, 422), r.status_code
    assert "download" not in r.text and "import" not in r.text


def test_index_pointing_outside_raw_is_not_served(in_tmp, data):
    index = list(csv.DictReader(open(paths.RAW / "index.csv")))
    index[0]["file"] = "../../params.yaml"
    with open(paths.RAW / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(index[0]))
        w.writeheader()
        w.writerows(index)
    client = TestClient(create_app(in_tmp, PORT), base_url=BASE)
    for kind in ("thumb", "full"):
        r = client.get(f"/img/{index[0]['id']}/{kind}")
        assert r.status_code in (404, 422) and "download" not in r.text


def test_thumbnails_are_made_once_and_cached(client, data, in_tmp):
    a = data["ids"][0]
    r = client.get(f"/img/{a}/thumb")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    cached = list((in_tmp / ".cache/review").iterdir())
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert client.get(f"/img/{a}/thumb").content == r.content
    assert cached[0].stat().st_mtime_ns == stamp
    file = next(r["file"] for r in csv.DictReader(open(paths.RAW / "index.csv")) if r["id"] == a)
    full = client.get(f"/img/{a}/full")
    assert full.status_code == 200 and full.content == (paths.RAW / file).read_bytes()


def test_server_writes_only_the_manifest_and_its_cache(client, data, in_tmp):
    def files() -> dict[str, int]:
        return {
            str(p.relative_to(in_tmp)): p.stat().st_mtime_ns
            for p in in_tmp.rglob("*")
            if p.is_file() and ".cache" not in p.parts
        }

    before = files()
    a, b = data["ids"][:2]
    decide(client, [a], "accept")
    decide(client, [b, data["member"]], "reject")
    client.post("/api/undo", json={})
    for i in data["ids"][:5] + [data["member"]]:
        client.get(f"/img/{i}/thumb")
        client.get(f"/img/{i}/full")
    client.get("/api/state")
    after = files()
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # The lock file beside the manifest is created once, empty, and never holds data.
    lock = paths.MANIFEST.with_name(".manifest.csv.lock")
    assert changed == {str(paths.MANIFEST), str(lock)}
    assert (in_tmp / lock).stat().st_size == 0


def start_review(cwd) -> tuple[subprocess.Popen, str]:
    """`python -m pipeline review` on a free port in `cwd`; returns the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "review", "--port", "0", "--no-browser"],
        cwd=cwd,
        env=env() | {"PYTHONPATH": str(ROOT)},  # this checkout's pipeline, not an installed one
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return proc, re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline()).group(0)


def test_cli_serves_on_a_free_port_and_refuses_a_busy_one(data, in_tmp, capsys):
    proc, url = start_review(in_tmp)
    try:
        with urllib.request.urlopen(url + "api/state", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        assert main(["review", "--port", str(port), "--no-browser"]) == 2
        assert time.monotonic() - started < 10
    assert f"error: port {port} is in use; pass --port N" in capsys.readouterr().err


def test_cli_says_what_is_missing_or_broken(in_tmp, capsys):
    write_params(in_tmp, {})
    assert main(["review", "--port", "0", "--no-browser"]) == 2
    assert "data/dedup/candidates.csv: not found; run `dvc repro dedup` first" in capsys.readouterr().err


def test_cli_refuses_to_start_on_a_broken_manifest(data, capsys):
    paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    paths.MANIFEST.write_text(f"id,decision,note\n{data['ids'][0]},ok,\n")
    assert main(["review", "--port", "0", "--no-browser"]) == 2
    assert "manifest.csv:2: unknown decision 'ok'" in capsys.readouterr().err


def test_items_carry_the_licence_and_attribution_from_the_index(in_tmp, data):
    index = list(csv.DictReader(open(paths.RAW / "index.csv")))
    licence = {
        "title": "Mario sprite",
        "license": "cc0",
        "license_version": "1.0",
        "license_url": "https://creativecommons.org/publicdomain/zero/1.0/",
        "creator": "Jane Pixel",
        "attribution": '"Mario sprite" by Jane Pixel is marked with CC0 1.0.',
    }
    with open(paths.RAW / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, [*index[0], *licence])
        w.writeheader()
        w.writerows(r | (licence if r["id"] == data["kept"] else {}) for r in index)
    items = {
        i["id"]: i
        for i in TestClient(create_app(in_tmp, PORT), base_url=BASE).get("/api/items").json()["items"]
    }
    assert {k: items[data["kept"]][k] for k in licence} == licence
    other = next(i for i in data["ids"] if i != data["kept"])
    assert {k: items[other][k] for k in licence} == dict.fromkeys(licence, "")
