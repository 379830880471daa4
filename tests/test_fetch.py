"""The downloader against loopback servers: formats, every kind of refusal, retries, caps, resume."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from pipeline.fetch import Fetcher, Log, Task, read_log
from tests.conftest import ROOT, env, write_params
from tests.loopback import FORMATS, Routes, Server, image_bytes, make_tls


@pytest.fixture
def server():
    with Server() as s:
        yield s


def fetcher(tmp_path, **kw) -> Fetcher:
    opts = dict(
        workers=16,
        per_host=4,
        timeout=1.0,
        retries=2,
        backoff=0.01,
        max_bytes=200_000,
        min_side=32,
        ca_bundle="",
        user_agent="mario-gan-test",
    )
    return Fetcher(tmp_path / "store", **(opts | kw))


def one(f: Fetcher, server: Server, path: str):
    return f.fetch(Task(server.url(path)))


def test_every_common_format_is_stored_under_its_content_name(server, tmp_path):
    f = fetcher(tmp_path)
    paths = [f"/img/{i}.{ext}" for i, ext in enumerate(FORMATS)]
    outs = f.fetch_many([Task(server.url(p)) for p in paths])
    assert [o.format for o in outs] == list(FORMATS.values())
    for path, o in zip(paths, outs, strict=True):
        assert o.ok, o.reason
        data = server.routes.files[path][0]
        sha = hashlib.sha256(data).hexdigest()
        assert o.sha256 == sha and o.bytes == len(data)
        assert o.file.startswith(f"img-{sha[:16]}.") and "/" not in o.file
        assert (f.store / o.file).read_bytes() == data
        assert (o.width, o.height) == Image.open(f.store / o.file).size
    assert not list(f.store.glob(".*.tmp"))


def test_same_bytes_from_two_urls_are_stored_once(server, tmp_path):
    f = fetcher(tmp_path)
    a, b = f.fetch_many([Task(server.url("/dup/a.png")), Task(server.url("/dup/b.png"))])
    assert a.ok and b.ok and a.file == b.file
    assert len(list(f.store.glob("img-*"))) == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/html.jpg", "HTML page, not an image"),
        ("/vector.png", "SVG"),
        ("/empty.jpg", "empty body (0 bytes)"),
        ("/truncated.jpg", "truncated or corrupt image"),
        ("/bomb.png", "decompression bomb"),
        ("/tiny.png", "too small: 16x16"),
        ("/huge.jpg", "too large: 300002 bytes"),
        ("/stream-huge.jpg", "too large: over download.max_bytes"),
        ("/to-file", "scheme 'file' refused"),
        ("/redirect/9", "more than 5 redirects"),
        ("/missing.jpg", "HTTP 404"),
    ],
)
def test_bad_responses_are_rejected_with_their_reason(server, tmp_path, path, reason):
    f = fetcher(tmp_path)
    o = one(f, server, path)
    assert not o.ok and reason in o.reason
    assert not o.retry
    assert not list(f.store.glob("img-*")) and not list(f.store.glob(".*"))


def test_non_http_schemes_are_refused_before_any_request(tmp_path):
    f = fetcher(tmp_path)
    for url in ["file:///etc/passwd", "ftp://127.0.0.1/a.jpg", "data:image/png;base64,AAAA", "/img/0.jpg"]:
        o = f.fetch(Task(url))
        assert not o.ok and "refused: only http and https" in o.reason


def test_500_is_retried_and_404_is_not(server, tmp_path):
    f = fetcher(tmp_path)
    assert one(f, server, "/flaky/0.jpg").ok
    assert server.routes.hits["/flaky/0.jpg"] == 2
    assert not one(f, server, "/missing.jpg").ok
    assert server.routes.hits["/missing.jpg"] == 1
    o = one(f, server, "/always500")
    assert not o.ok and o.reason == "HTTP 503" and o.retry
    assert server.routes.hits["/always500"] == 3  # 1 + retries


def test_slow_response_times_out_and_is_retried(server, tmp_path):
    f = fetcher(tmp_path, timeout=0.3, retries=1)
    start = time.monotonic()
    o = one(f, server, "/slow/2")
    assert not o.ok and o.retry and o.reason.startswith("timeout")
    assert server.routes.hits["/slow/2"] == 2
    assert time.monotonic() - start < 1.9  # gave up long before the server answered twice


def test_redirect_chain_is_followed(server, tmp_path):
    o = one(fetcher(tmp_path), server, "/redirect/3")
    assert o.ok and o.final_url.endswith("/img/1.png")
    assert all(server.routes.hits[f"/redirect/{n}"] == 1 for n in (1, 2, 3))


def test_per_host_cap_limits_concurrent_requests(tmp_path):
    routes = Routes()
    routes.delay = 0.15
    paths = [routes.add(f"/n/{i}.png", image_bytes("PNG", (40, 40), (i, 0, 0))) for i in range(12)]
    with Server(routes) as s:
        outs = fetcher(tmp_path, workers=12, per_host=3).fetch_many([Task(s.url(p)) for p in paths])
    assert all(o.ok for o in outs)
    assert routes.max_inflight == 3


def test_https_trusts_a_ca_bundle_from_param_or_env(tmp_path, monkeypatch):
    ca, cert, key = make_tls(tmp_path / "tls")
    with Server(cert=cert, key=key) as s:
        url = s.url("/img/1.png")
        assert url.startswith("https://")
        untrusted = fetcher(tmp_path, retries=0).fetch(Task(url))
        assert not untrusted.ok and "certificate not trusted" in untrusted.reason
        assert fetcher(tmp_path, ca_bundle=str(ca)).fetch(Task(url)).ok
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        assert fetcher(tmp_path / "env").fetch(Task(url)).ok


def test_log_keeps_done_urls_and_forgets_transient_failures(server, tmp_path):
    f = fetcher(tmp_path, retries=0)
    tasks = [Task(server.url(p)) for p in ["/img/0.jpg", "/missing.jpg", "/always500"]]
    f.fetch_many(tasks)
    done = read_log(f.store)
    assert set(done) == {tasks[0].url, tasks[1].url}
    assert done[tasks[0].url].ok and done[tasks[1].url].reason == "HTTP 404"
    # A line torn by a kill is ignored, and the next run's lines still parse.
    with open(f.store / "fetched.csv", "a") as fh:
        fh.write("http://127.0.0.1:1/torn.jpg,Tr")
    with Log(f.store) as log:
        log.write(f.fetch(Task(server.url("/img/2.gif"))))
    assert len(read_log(f.store)) == 3
    # A stored file that went missing is fetched again.
    (f.store / done[tasks[0].url].file).unlink()
    assert tasks[0].url not in read_log(f.store)


def test_kill_9_mid_run_leaves_no_partial_file_and_next_run_completes(tmp_path):
    routes = Routes()
    routes.delay = 0.25
    paths = [routes.add(f"/k/{i}.png", image_bytes("PNG", (80, 80), (i, 9, 9))) for i in range(24)]
    with Server(routes) as s:
        (tmp_path / "urls.txt").write_text("".join(s.url(p) + "\n" for p in paths))
        params = {"download": {"source": "urls", "urls_file": "urls.txt", "workers": 2, "per_host": 2}}
        write_params(tmp_path, params)
        cmd = [sys.executable, "-m", "pipeline", "download"]
        e = env() | {"PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        store = tmp_path / ".cache/download"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(list(store.glob("img-*"))) < 3:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        first = {p.name for p in store.glob("img-*")}
        assert 3 <= len(first) < 24
        for p in store.glob("img-*"):  # every file under a final name is whole
            assert p.name.startswith("img-" + hashlib.sha256(p.read_bytes()).hexdigest()[:16])
        fetched_before = sum(routes.hits.values())
        routes.delay = 0
        second = subprocess.run(cmd, cwd=tmp_path, env=e, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
    index = (tmp_path / "data/raw/index.csv").read_text().splitlines()
    assert len(index) == 1 + 24
    assert not list(store.glob(".*.tmp"))
    # Only what the first run had not finished was fetched again.
    assert sum(routes.hits.values()) - fetched_before <= 24 - len(first) + 2
