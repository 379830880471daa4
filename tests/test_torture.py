"""The torture suite: the pipeline attacked as a careless or hostile user would (issue 18).

Each case is one way of breaking something: hostile URL lists, hostile folders,
hostile manifests, concurrent writers, read-only and full output folders, links
and loops under data/raw, kill -9 of stages. The promise checked is the README's
"Bad input": nothing already downloaded or decided is lost, and a problem the
user can fix is one line naming the file, line or param. (Params are attacked
in tests/test_torture_params.py, dedup's caches in tests/test_dedup.py.)

Shapes that come from elsewhere, and where from:
- DVC's link cache types (symlink, hardlink, copy, reflink) and its cache layout
  `.dvc/cache/files/md5/<2 hex>/<30 hex>`: https://dvc.org/doc/user-guide/project-structure/internal-files
  and https://dvc.org/doc/user-guide/data-management/large-dataset-optimization
- The unparseable URLs are the ones urllib.parse and urllib3 refuse (`Invalid
  IPv6 URL`, `LocationParseError`); the 70,000-character host is from the issue.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline import curate, download, paths
from pipeline.__main__ import main
from pipeline.curate import Manifest, ManifestError, format_manifest, parse_manifest, read_manifest
from pipeline.fetch import MAX_URL, Task, read_log
from pipeline.params import params_from_dict
from pipeline.review import create_app
from tests.conftest import ROOT, env, make_project, sh, write_params
from tests.loopback import Server, _Quiet, bomb_png, image_bytes
from tests.test_fetch import fetcher
from tests.test_review_api import BASE, PORT, rows, start_review

E = env() | {"PYTHONPATH": str(ROOT)}  # subprocesses import this checkout's pipeline


def one_error_line(text: str) -> str:
    """The stage's stderr must be one `error:` line, no traceback; returns it."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


# --- hostile URL lists ------------------------------------------------------------------------------

BAD_URLS = {
    "http://[::1/x.jpg": "bad URL: Invalid IPv6 URL",
    "http://" + "a" * 70_000 + ".com/x.jpg": "bad URL: 70,0",
    "http://" + "a" * 300 + ".com/x.jpg": "bad URL: ",  # a DNS label over 63 characters
    "http://a..b/x.jpg": "bad URL: ",
    "http://[zz]/x.jpg": "bad URL: ",
    "http://127.0.0.1:99999/x.jpg": "bad URL: ",
    "http://%zz/x.jpg": "bad URL: ",
    "http://exa mple.com/x.jpg": "bad URL: ",
    "file:///etc/passwd": "scheme 'file' refused",
    "javascript:alert(1)": "scheme 'javascript' refused",
    "http:///x.jpg": "no host in URL",
    "": "scheme '(none)' refused",
}


@pytest.mark.parametrize("url", list(BAD_URLS), ids=lambda u: u[:24])
def test_an_unparseable_url_is_rejected_with_a_reason_never_raised(tmp_path, url):
    outcome = fetcher(tmp_path, retries=0).fetch(Task(url))
    assert not outcome.ok and not outcome.retry
    assert outcome.reason.startswith(BAD_URLS[url]), outcome.reason


class _Redirects(BaseHTTPRequestHandler):
    """Answers /to/<anything> with a redirect to that text, unparsed."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", urllib.request.unquote(self.path.removeprefix("/to/")))
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector():
    httpd = _Quiet(("127.0.0.1", 0), _Redirects)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/to/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("target", ["http://[::1/x.jpg", "http://a..b/x.jpg", "file:///etc/passwd"])
def test_a_redirect_to_an_unparseable_url_is_rejected(tmp_path, redirector, target):
    outcome = fetcher(tmp_path, retries=0).fetch(Task(redirector + urllib.request.quote(target)))
    assert not outcome.ok and not outcome.retry
    assert outcome.reason.startswith(("bad redirect", "bad URL", "scheme 'file' refused")), outcome.reason


def test_a_hostile_url_list_downloads_the_rest_on_every_run(in_tmp, redirector):
    """The issue's case: one bad line used to kill `download` on every rerun."""
    hostile = [u for u in BAD_URLS if u.startswith("http") and " " not in u]
    hostile += [redirector + urllib.request.quote("http://[::1/x.jpg"), "http://" + "b" * 200_000 + "/x.png"]
    with Server() as s:
        good = [s.url("/img/0.jpg"), s.url("/img/1.png"), s.url("/bomb.png"), s.url("/truncated.jpg")]
        (in_tmp / "urls.txt").write_text("\n".join(hostile[:3] + good + hostile[3:]) + "\n")
        params = params_from_dict({"download": {"source": "urls", "urls_file": "urls.txt", "retries": 0}})
        for _ in range(2):  # the second run reads the log the first one wrote
            index = download.run(params)
            assert len(index) == 2
    rejected = {r["url"]: r["reason"] for r in csv.DictReader(open(paths.RAW / "rejected.csv"))}
    assert len(rejected) == len(hostile) + 2
    assert hostile[-1][:200] + "... (200,013 characters)" in rejected  # cut, so the CSV stays readable
    assert rejected["http://[::1/x.jpg"] == "bad URL: Invalid IPv6 URL"
    assert all(rejected.values())
    # What was refused for good is remembered; the URL too long to log is refused again, at no cost.
    logged = read_log(download.CACHE)
    assert "http://[::1/x.jpg" in logged and not any(len(u) > MAX_URL for u in logged)


def test_downloaded_files_get_the_mode_the_umask_gives(in_tmp):
    """mkstemp creates 0600 files; stored images and the copies in data/raw must be 0644 under umask 022."""
    old = os.umask(0o022)
    try:
        with Server() as s:
            (in_tmp / "urls.txt").write_text(s.url("/img/0.jpg") + "\n")
            download.run(params_from_dict({"download": {"source": "urls", "urls_file": "urls.txt"}}))
        (in_tmp / "mine").mkdir()
        (in_tmp / "mine/a.png").write_bytes(image_bytes("PNG", (90, 90)))
        download.run(params_from_dict({"download": {"source": "folder", "folder": "mine"}}))
    finally:
        os.umask(old)
    stored = list(download.CACHE.glob("img-*")) + list(paths.RAW.glob("img-*"))
    assert stored
    for f in stored:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


# --- hostile folders --------------------------------------------------------------------------------


def test_a_hostile_folder_is_indexed_and_every_refusal_has_a_reason(in_tmp):
    d = in_tmp / "mine"
    (d / "sub").mkdir(parents=True)
    (d / "good.png").write_bytes(image_bytes("PNG", (90, 90), (1, 2, 3)))
    os.rename(d / "good.png", os.fsencode(d) + b"/caf\xe9 \xff.png")  # not UTF-8
    (d / "sub/ok.jpg").write_bytes(image_bytes("JPEG", (90, 90), (9, 9, 9)))
    (d / "bomb.png").write_bytes(bomb_png())
    (d / "truncated.jpg").write_bytes(image_bytes("JPEG", (200, 200))[:300])
    (d / "empty.png").write_bytes(b"")
    (d / "page.jpg").write_text("<!DOCTYPE html><html><body>404</body></html>")
    os.mkfifo(d / "fifo.png")  # reading it would block forever
    os.symlink("loop.png", d / "loop.png")
    os.symlink("nowhere.png", d / "dangling.png")
    os.symlink(".", d / "sub/self")  # a directory loop
    (d / "dir.png").mkdir()
    params = params_from_dict({"download": {"source": "folder", "folder": "mine"}})
    index = download.run(params)
    assert len(index) == 2
    origins = sorted(r["origin"] for r in csv.DictReader(open(paths.RAW / "index.csv", encoding="utf-8")))
    assert origins == ["mine/caf\\xe9 \\xff.png", "mine/sub/ok.jpg"]
    reasons = {Path(r["url"]).name: r["reason"] for r in csv.DictReader(open(paths.RAW / "rejected.csv"))}
    assert set(reasons) == {"bomb.png", "truncated.jpg", "empty.png", "page.jpg"}
    assert all(reasons.values())


# --- hostile manifests ------------------------------------------------------------------------------

SWALLOWED = [
    # A stray quote opening a cell: csv reads on to the next quote, rows become one id or note.
    ('id,decision,note\na,accept,\n"b,accept,\nc,accept,\nd,reject,"\ne,accept,\n', "m.csv:3: a quoted cell"),
    ('id,decision,note\na,accept,"oops\nb,reject,\nc,accept,\n', "m.csv:2: cannot read the row"),
    ('id,decision,note\na,"acc"ept,\n', "m.csv:2: cannot read the row"),
    ('id,decision,note\na,accept,"x\n\nb,accept,"\n', "m.csv:2: a quoted cell runs on to line 4"),
]


@pytest.mark.parametrize(("text", "error"), SWALLOWED)
def test_an_unbalanced_quote_is_an_error_naming_its_line(text, error):
    with pytest.raises(ManifestError, match=re.escape(error)):
        parse_manifest(text, "m.csv")


@pytest.mark.parametrize("size", [10_001, 131_073, 300_000])
def test_an_over_long_cell_is_an_error_naming_its_line(size):
    text = f"id,decision,note\na,accept,\nb,reject,{'x' * size}\n"
    with pytest.raises(ManifestError, match=r"m.csv:3: (cell 3 is|cannot read the row)"):
        parse_manifest(text, "m.csv")


def test_unexpected_cells_and_bad_bytes_name_the_file_and_line(tmp_path):
    with pytest.raises(ManifestError, match=r"m.csv:3: 4 cells but the header names 3 columns"):
        parse_manifest("id,decision,note\na,accept,\nb,reject,,surprise\n", "m.csv")
    (tmp_path / "m.csv").write_bytes(b"id,decision,note\na,accept,caf\xe9\n")
    with pytest.raises(ManifestError, match="not UTF-8 text; save it as CSV UTF-8"):
        read_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize(
    ("header", "row", "columns"),
    [
        ("id,decision,note,", "a,accept,,kept under no name", ["id", "decision", "note", ""]),
        ("id,decision,note,note", "a,accept,first,second", ["id", "decision", "note", "note"]),
        ("who,id,,decision,note,,", "me,a,x,reject,n,y,z", ["id", "decision", "note", "who", "", "", ""]),
    ],
)
def test_unknown_columns_named_or_not_survive_a_write(tmp_path, header, row, columns):
    path = tmp_path / "m.csv"
    path.write_text(f"{header}\n{row}\n")
    m = read_manifest(path)
    m.set("b", "accept", "new")
    curate.write_manifest(path, m)
    lines = list(csv.reader(io.StringIO(path.read_text())))
    assert lines[0] == columns
    assert sorted(lines[1]) == sorted(row.split(","))
    assert read_manifest(path).rows == m.rows


cell = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12).map(
    str.strip
)
ids = st.text(
    st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_."), min_size=1, max_size=12
)


@st.composite
def manifests(draw) -> Manifest:
    extra = draw(st.lists(cell, max_size=3))  # names may be blank, repeated, or base names again
    header = draw(st.permutations(["id", "decision", "note", *extra]))
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    for image_id in draw(st.lists(ids, max_size=6, unique=True)):
        values = {"id": image_id, "decision": draw(st.sampled_from(["accept", "reject", ""]))}
        w.writerow(
            [values.pop(h, None) if h in ("id", "decision") and h in values else draw(cell) for h in header]
        )
    try:
        return parse_manifest(text.getvalue())
    except ManifestError:
        return draw(st.nothing())  # e.g. an extra column named "ID" shadowing the real one


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(manifests(), st.lists(st.tuples(ids, st.sampled_from(["accept", "reject", ""]), cell), max_size=4))
def test_manifest_round_trip_keeps_every_cell(m, changes):
    for image_id, decision, note in changes:
        m.set(image_id, decision, note)
    text = format_manifest(m)
    again = parse_manifest(text)
    assert again.rows == m.rows
    assert format_manifest(again) == text


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from('ab,"\n\r ;\ufeff\x00é'), max_size=60))
def test_any_text_parses_or_fails_with_a_manifest_error(text):
    try:
        m = parse_manifest("id,decision,note\n" + text, "m.csv")
    except ManifestError as exc:
        assert str(exc).startswith("m.csv:")
        return
    assert parse_manifest(format_manifest(m)).rows == m.rows


def test_a_stray_quote_stops_curate_with_one_line(data, capsys):
    """The issue's case: status, sync and the stage used to exit 0, training on what was left."""
    a, b, c = data["ids"][:3]
    paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    paths.MANIFEST.write_text(f'id,decision,note\n{a},accept,\n"{b},accept,\n{c},accept,\n')
    before = paths.MANIFEST.read_bytes()
    for argv in (["curate", "status"], ["curate", "sync"], ["curate"], ["curate", "accept", c]):
        assert main(argv) == 2
        assert "manifest.csv:3: cannot read the row" in one_error_line(capsys.readouterr().err)
    assert paths.MANIFEST.read_bytes() == before


def test_a_long_note_is_refused_at_write_and_the_manifest_stays_readable(data, capsys):
    a = data["ids"][0]
    assert main(["curate", "accept", a, "--note", "x" * 200_000]) == 2
    assert "note is 200,000 characters; the most is 2,000" in one_error_line(capsys.readouterr().err)
    client = TestClient(create_app(Path.cwd(), PORT), base_url=BASE)
    r = client.post("/api/decide", json={"ids": [a], "decision": "accept", "note": "y" * 140_000})
    assert r.status_code == 422 and "the most is 2,000" in r.json()["error"]
    r = client.post("/api/decide", json={"ids": [a], "decision": "accept", "note": "two\nlines"})
    assert r.status_code == 422 and "one line" in r.json()["error"]
    assert (
        client.post("/api/decide", json={"ids": [a], "decision": "accept", "note": "z" * 2000}).status_code
        == 200
    )
    assert client.get("/api/state").status_code == 200
    assert read_manifest(paths.MANIFEST).rows[a]["note"] == "z" * 2000


def test_a_request_with_more_ids_than_images_is_refused_at_once(data):
    """2.5M ids took 83 s of CPU in a list lookup; now a set, and more ids than images is refused."""
    client = TestClient(create_app(Path.cwd(), PORT), base_url=BASE)
    r = client.post("/api/decide", json={"ids": data["ids"] * 20_000, "decision": "accept"})
    assert r.status_code == 413 and "ids in one request, but there are only" in r.json()["error"]
    assert not paths.MANIFEST.exists()


# --- concurrent writers -----------------------------------------------------------------------------


def test_page_and_cli_writing_at_once_lose_no_decision(data):
    """The review page (its own process, 4 browsers' worth of requests) and `curate accept|reject`
    processes write the manifest at the same time; every decision must be in it afterwards."""
    ids = data["ids"]
    page_ids, cli_ids = ids[: len(ids) // 2], ids[len(ids) // 2 :]
    proc, url = start_review(Path.cwd())
    try:
        cli_done = threading.Event()

        def page(worker: int) -> dict[str, str]:
            mine = page_ids[worker::4]
            final: dict[str, str] = {}
            n = 0
            while n < 4 or not cli_done.is_set():  # keep writing for as long as the CLI does
                n += 1
                for i in mine:
                    decision = ("accept", "reject")[(n + len(i)) % 2]
                    req = urllib.request.Request(
                        url + "api/decide",
                        data=f'{{"ids": ["{i}"], "decision": "{decision}"}}'.encode(),
                        headers={"Content-Type": "application/json"},
                    )
                    with urllib.request.urlopen(req, timeout=60) as r:
                        assert r.status == 200
                    final[i] = decision
            return final

        def cli(worker: int) -> dict[str, str]:
            mine = cli_ids[worker::3]
            final = {i: ("accept" if len(i) % 2 else "reject") for i in mine}
            for n in range(0, len(mine), 3):  # a few ids per command: each process start costs seconds
                for decision in ("accept", "reject"):
                    chunk = [i for i in mine[n : n + 3] if final[i] == decision]
                    if not chunk:
                        continue
                    p = subprocess.run(
                        [sys.executable, "-m", "pipeline", "curate", decision, *chunk],
                        env=E,
                        capture_output=True,
                        text=True,
                        timeout=300,
                    )
                    assert p.returncode == 0, p.stderr
            return final

        with ThreadPoolExecutor(7) as pool:
            clis = [pool.submit(cli, w) for w in range(3)]
            pages = [pool.submit(page, w) for w in range(4)]
            try:
                expected = {k: v for f in clis for k, v in f.result().items()}
            finally:
                cli_done.set()
            expected |= {k: v for f in pages for k, v in f.result().items()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert len(expected) == len(ids)
    assert rows(Path.cwd()) == expected


def test_a_lock_held_too_long_refuses_with_one_line(data, capsys, monkeypatch):
    monkeypatch.setattr(curate, "LOCK_TIMEOUT", 0.2)
    with curate.locked(paths.MANIFEST):  # another writer, stuck
        assert main(["curate", "accept", data["ids"][0]]) == 2
        assert "held .manifest.csv.lock for over 0.2 s" in one_error_line(capsys.readouterr().err)
        client = TestClient(create_app(Path.cwd(), PORT), base_url=BASE)
        r = client.post("/api/decide", json={"ids": [data["ids"][0]], "decision": "accept"})
        assert r.status_code == 503 and "The decision was not saved" in r.json()["error"]
    assert not paths.MANIFEST.exists()


# --- read-only and full folders ---------------------------------------------------------------------


def failing_writes(monkeypatch, folder: Path, code: int) -> None:
    """An OSError-raising shim: every temp file created in `folder` fails as a full or read-only
    disk would. (A real tmpfs is used too, below, where this machine allows mounting.)"""
    real = os.open
    where = str(folder.resolve())

    def shim(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)).startswith(where):
            raise OSError(code, os.strerror(code), path)
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", shim)


@pytest.fixture
def accepted(data) -> list[str]:
    params = params_from_dict({"download": {"count": 30}, "curate": {"include_pending": True}})
    curate.run(params)
    write_params(
        Path.cwd(),
        {"download": {"count": 30}, "resize": {"size": 32, "workers": 1}, "train": {"resolution": 32}},
    )
    return [r["id"] for r in csv.DictReader(open(paths.CURATED / "accepted.csv"))]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_full_or_read_only_processed_is_one_line_and_keeps_what_was_there(
    accepted, monkeypatch, capsys, code
):
    assert main(["resize"]) == 0
    before = {p.name: p.read_bytes() for p in paths.PROCESSED.iterdir()}
    capsys.readouterr()
    failing_writes(monkeypatch, paths.PROCESSED, code)
    assert main(["resize"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"data/processed/.{accepted[0]}.png." in line and os.strerror(code) in line
    assert {p.name: p.read_bytes() for p in paths.PROCESSED.iterdir()} == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_raw_stops_download_with_one_line(in_tmp, monkeypatch, capsys, code):
    (in_tmp / "mine").mkdir()
    (in_tmp / "mine/a.png").write_bytes(image_bytes("PNG", (90, 90)))
    write_params(in_tmp, {"download": {"source": "folder", "folder": "mine"}})
    paths.RAW.mkdir(parents=True)
    failing_writes(monkeypatch, paths.RAW, code)
    assert main(["download"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: data/raw/.") and os.strerror(code) in line


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_decision_into_a_read_only_or_full_folder_is_a_clear_error(data, monkeypatch, capsys, code):
    a = data["ids"][0]
    client = TestClient(create_app(Path.cwd(), PORT), base_url=BASE)
    failing_writes(monkeypatch, paths.MANIFEST.parent, code)
    r = client.post("/api/decide", json={"ids": [a], "decision": "accept"})
    assert r.status_code == 503
    assert "cannot write" in r.json()["error"] and os.strerror(code) in r.json()["error"]
    assert r.json()["decisions"][a] == ""  # the page shows what the file says
    assert main(["curate", "accept", a]) == 2
    assert "manifest.csv: cannot write" in one_error_line(capsys.readouterr().err)


def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs in a private mount namespace here")
@pytest.mark.parametrize(("opts", "why"), [("size=8k", "No space left"), ("ro", "Read-only file system")])
def test_a_real_full_or_read_only_tmpfs_under_processed(accepted, opts, why):
    """A real tmpfs mounted over data/processed, in a private mount namespace (unshare -rm)."""
    paths.PROCESSED.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o {opts} none data/processed && exec {sys.executable} -m pipeline resize"
    p = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=E, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2, p.stderr
    line = one_error_line(p.stderr)
    assert "data/processed" in line and why in line


@pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs in a private mount namespace here")
def test_training_onto_a_real_full_tmpfs_is_one_line(accepted):
    """A full models/ (a real 8 kB tmpfs) while train saves generator.pt and the checkpoint: the
    one disk line, naming the file, not a traceback from torch.save."""
    train = {
        "resolution": 32,
        "channels": 8,
        "batch_size": 8,
        "kimg": 0.032,
        "eval_kimg": 0,
        "threads": 1,
    }
    write_params(
        Path.cwd(), {"download": {"count": 30}, "resize": {"size": 32, "workers": 1}, "train": train}
    )
    assert main(["resize"]) == 0
    Path("models").mkdir(exist_ok=True)
    script = f"mount -t tmpfs -o size=8k none models && exec {sys.executable} -m pipeline train"
    p = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=E, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 2, p.stderr
    line = one_error_line(p.stderr)
    assert "models/" in line and "No space left" in line


# --- links, loops and DVC cache types under data/raw ------------------------------------------------


def dvc_cache_links(how: str) -> None:
    """Replace every file in data/raw by a link into a DVC-style cache, as `dvc checkout` does."""
    cache = Path(".dvc/cache/files/md5")
    for f in sorted(paths.RAW.glob("*.*")):
        if f.suffix == ".csv":
            continue
        digest = f"{abs(hash(f.name)):032x}"[:32]
        target = cache / digest[:2] / digest[2:]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)
        os.chmod(target, 0o444)  # DVC makes cache files read-only
        if how == "symlink":
            os.symlink(target.resolve(), f)
        elif how == "hardlink":
            os.link(target, f)
        else:  # copy and reflink look the same from here: an ordinary file
            shutil.copy2(target, f)


@pytest.mark.parametrize("how", ["symlink", "hardlink", "copy"])
def test_review_page_shows_files_linked_by_every_dvc_cache_type(data, how):
    dvc_cache_links(how)
    client = TestClient(create_app(Path.cwd(), PORT), base_url=BASE)
    body = client.get("/api/items").json()
    assert body.get("skipped", []) == [] and len(body["items"]) == len(data["ids"])
    assert all(item["bytes"] > 0 for item in body["items"])
    for i in data["ids"][:3]:
        for kind in ("thumb", "full"):
            r = client.get(f"/img/{i}/{kind}")
            assert r.status_code == 200, (kind, r.text)
            Image.open(io.BytesIO(r.content)).verify()


@pytest.mark.e2e
def test_review_page_with_real_dvc_symlink_and_hardlink_checkouts(data):
    """The issue's case with DVC itself: `cache.type: symlink` made every image answer 422."""
    cwd = Path.cwd()
    sh("git", "init", "-q", cwd=cwd)
    sh("dvc", "init", "-q", cwd=cwd)
    sh("dvc", "config", "core.analytics", "false", cwd=cwd)
    index = {r["id"]: r["file"] for r in csv.DictReader(open(paths.RAW / "index.csv"))}
    for cache_type, check in [("symlink", Path.is_symlink), ("hardlink", lambda f: f.stat().st_nlink == 2)]:
        sh("dvc", "config", "cache.type", cache_type, cwd=cwd)
        if cache_type == "symlink":
            sh("dvc", "add", "-q", str(paths.RAW), cwd=cwd)
        else:
            sh("dvc", "checkout", "-q", "--relink", cwd=cwd)
        assert all(check(paths.RAW / f) for f in index.values()), cache_type
        client = TestClient(create_app(cwd, PORT), base_url=BASE)
        for i in data["ids"][:3]:
            assert client.get(f"/img/{i}/thumb").status_code == 200, cache_type
            assert client.get(f"/img/{i}/full").status_code == 200, cache_type
        body = client.get("/api/items").json()
        assert body["skipped"] == [] and all(item["bytes"] > 0 for item in body["items"])


def test_a_symlink_loop_or_fifo_in_raw_is_skipped_with_a_reason(data):
    index = {r["id"]: r["file"] for r in csv.DictReader(open(paths.RAW / "index.csv"))}
    a, b, c = data["ids"][:3]
    (paths.RAW / index[a]).unlink()
    os.symlink(index[a], paths.RAW / index[a])  # points at itself
    (paths.RAW / index[b]).unlink()
    os.mkfifo(paths.RAW / index[b])
    (paths.RAW / index[c]).unlink()
    client = TestClient(create_app(Path.cwd(), PORT), base_url=BASE)
    r = client.get("/api/items")
    assert r.status_code == 200
    skipped = {s["id"]: s["reason"] for s in r.json()["skipped"]}
    assert skipped == {
        a: "cannot read: Too many levels of symbolic links",
        b: "not a regular file",
        c: "file not found",
    }
    assert len(r.json()["items"]) == len(data["ids"]) - 3
    r = client.get(f"/img/{a}/thumb")
    assert r.status_code == 422 and "symbolic links" in r.text
    assert client.post("/api/decide", json={"ids": [a], "decision": "reject"}).status_code == 200


# --- kill -9 ----------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(proc.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resize_workers_die_with_their_parent_after_kill_9(in_tmp):
    """Two workers on big images; kill -9 the stage; the workers must go too, not live on orphaned."""
    paths.RAW.mkdir(parents=True)
    noise = Image.effect_noise((3000, 3000), 60).convert("RGB")
    noise.save(paths.RAW / "big.png", compress_level=1)
    paths.CURATED.mkdir(parents=True)
    (paths.CURATED / "accepted.csv").write_text("id,file\n" + "".join(f"n{i},big.png\n" for i in range(40)))
    write_params(in_tmp, {"resize": {"size": 64, "workers": 2}})
    stage = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "resize"],
        env=E,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers := children(stage.pid)) < 2:
            assert time.monotonic() < deadline and stage.poll() is None, "no workers started"
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), "resize workers outlived their parent"
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)


@pytest.mark.e2e
def test_kill_9_of_each_stage_then_dvc_repro_completes(tmp_path):
    """For each stage in turn: `dvc repro` until that stage is running, kill -9 the stage, then the
    next `dvc repro` picks up. One tiny project; the last repro must finish with a trained model."""
    root = make_project(tmp_path / "p", {"download": {"count": 30}})
    sh("dvc", "config", "core.analytics", "false", cwd=root)
    for stage in ["download", "dedup", "resize", "train"]:
        repro = subprocess.Popen(
            ["dvc", "repro"], cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        target = None
        deadline = time.monotonic() + 120
        while target is None and repro.poll() is None and time.monotonic() < deadline:
            for pid in [p for c in children(repro.pid) for p in [c, *children(c)]]:
                try:
                    cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"pipeline" in cmd and stage.encode() in cmd:
                    target = pid
            time.sleep(0.02)
        if target is None:
            # Only after the fallback below let a tiny stage finish first: this one must then be done.
            assert repro.wait(timeout=120) == 0, f"{stage} never ran"
            assert "up to date" in sh("dvc", "status", stage, cwd=root).stdout
            continue
        time.sleep(0.1)  # let it get going
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            # On an idle machine a tiny stage can finish first (seen in CI with dedup). Kill the whole
            # `dvc repro` and whatever stage it started next instead: as hostile, and DVC must then
            # step over its own stale locks.
            for pid in [repro.pid, *(p for c in children(repro.pid) for p in [c, *children(c)])]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        assert repro.wait(timeout=60) != 0
    sh("dvc", "repro", "train", cwd=root)  # sample and evaluate were never killed: left out, for time
    assert "up to date" in sh("dvc", "status", "train", cwd=root).stdout
    assert (root / "models/generator.pt").exists()
    index = list(csv.DictReader(open(root / "data/processed/index.csv")))
    assert len(index) == len(list((root / "data/processed").glob("*.png"))) - 1  # + the contact sheet
