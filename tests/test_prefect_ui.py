"""The flow against a real `prefect server start`: its API records the run, a served
deployment runs on demand, a deployment on a process work pool runs on a real
`prefect worker`, and the UI in headless Chromium shows the run, its tasks
and artifacts.

PREFECT_SCREENSHOT=docs/prefect.png also writes the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from flows.pipeline_flow import stage_order
from tests.browser import chrome, needs_chromium, wait_for
from tests.conftest import BIN, ROOT, env, make_project

pytestmark = pytest.mark.e2e
KEYS = {"mario-gan-counts", "mario-gan-metrics", "mario-gan-samples", "mario-gan-train-progress"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    # Each was started in its own session: signal the group, so its children go too.
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on a free port; yields (url, env for clients of it)."""
    home = tmp_path_factory.mktemp("prefect")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = env() | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": f"{url}/api"}
    base.pop("TQDM_DISABLE", None)  # the UI should show training progress
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=base | {"PREFECT_HOME": str(home / "server")},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        assert proc.poll() is None, (home / "server.log").read_text()[-2000:]
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, "prefect server start", 120)
        yield url, base | {"PREFECT_API_URL": f"{url}/api", "PREFECT_HOME": str(home / "client")}
    finally:
        stop(proc)
        log.close()


def api(url: str, path: str, body: dict) -> list:
    """POST a Prefect REST filter, e.g. api(url, "flow_runs/filter", {...})."""
    r = httpx.post(f"{url}/api/{path}", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def flow_run(server, tmp_path_factory):
    """`python -m flows` in a fresh project, against the server; yields (project, flow run)."""
    url, client_env = server
    root = make_project(tmp_path_factory.mktemp("ui") / "proj")
    proc = subprocess.run(
        [sys.executable, "-m", "flows"], cwd=root, env=client_env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = api(url, "flow_runs/filter", {"flows": {"name": {"any_": ["mario-gan"]}}})
    assert len(runs) == 1
    return root, runs[0]


def test_the_server_records_the_run_its_stages_logs_and_artifacts(server, flow_run):
    url, _ = server
    root, run = flow_run
    assert run["state_type"] == "COMPLETED"
    tasks = api(url, "task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert sorted(t["name"] for t in tasks) == sorted(stage_order(root))
    assert {t["state_type"] for t in tasks} == {"COMPLETED"}
    logs = api(url, "logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})
    messages = "\n".join(entry["message"] for entry in logs)
    assert "Running stage 'train'" in messages  # DVC's own output, streamed
    artifacts = api(url, "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    assert {a["key"] for a in artifacts} >= KEYS


def test_a_served_deployment_keeps_its_cron_and_runs_on_demand(server, flow_run):
    url, client_env = server
    root, _ = flow_run
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows", "serve", "--name", "nightly", "--cron", "0 3 * * *"],
        cwd=root,
        env=client_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def registered() -> dict | None:
            r = httpx.get(f"{url}/api/deployments/name/mario-gan/nightly", timeout=5)
            return r.json() if r.status_code == 200 else None

        deployment = wait_for(registered, "python -m flows serve to register its deployment", 90)
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
        assert deployment["parameters"]["repo"] == str(root)

        trigger = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "mario-gan/nightly", "--param", 'stages=["sample"]'],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr

        def finished() -> dict | None:
            runs = api(
                url,
                "flow_runs/filter",
                {
                    "deployments": {"id": {"any_": [deployment["id"]]}},
                    "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
                },
            )
            return runs[0] if runs else None

        run = wait_for(finished, "the triggered deployment run to finish", 180)
        assert run["state_type"] == "COMPLETED", run["state"]
        tasks = api(url, "task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
        assert [(t["name"], t["state"]["name"]) for t in tasks] == [("sample", "Cached")]
    finally:
        stop(serve)


def test_a_process_worker_runs_a_deployment_started_through_the_api(server, flow_run, tmp_path):
    url, client_env = server
    root, _ = flow_run
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("seed: 42", "seed: 43", 1))  # sample has work to do
    deploy = subprocess.run(
        [sys.executable, "-m", "flows", "deploy", "--pool", "crunchers", "--name", "pooled"],
        cwd=root,
        env=client_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    pool = httpx.get(f"{url}/api/work_pools/crunchers", timeout=5).json()
    assert pool["type"] == "process"
    deployment = httpx.get(f"{url}/api/deployments/name/mario-gan/pooled", timeout=5).json()
    assert deployment["work_pool_name"] == "crunchers"
    run = httpx.post(f"{url}/api/deployments/{deployment['id']}/create_flow_run", json={}, timeout=10)
    run.raise_for_status()
    run_id = run.json()["id"]

    # Started elsewhere on purpose: the deployment itself says where the clone is.
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "crunchers"],
        cwd=tmp_path,
        env=client_env | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=(tmp_path / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def finished() -> dict | None:
            state = httpx.get(f"{url}/api/flow_runs/{run_id}", timeout=5).json()
            return state if state["state_type"] in ("COMPLETED", "FAILED", "CRASHED") else None

        done = wait_for(finished, "the worker to run the flow run", 300)
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done["state_type"] == "COMPLETED", log[-3000:]
    assert run_id in log  # this worker, not some other process, ran it
    tasks = api(url, "task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    states = {t["name"]: t["state"]["name"] for t in tasks}
    assert states == {s: "Completed" if s == "sample" else "Cached" for s in stage_order(root)}


@needs_chromium
def test_the_ui_shows_the_run_its_tasks_and_artifacts(server, flow_run, tmp_path):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    url, _ = server
    root, run = flow_run
    browser = chrome("1400,1000")

    def text(css: str) -> str:
        try:
            return " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, css))
        except WebDriverException:  # the page re-rendered under us: try again
            return ""

    def shows(css: str, texts: set[str], what: str) -> None:
        wait_for(lambda: all(t in text(css) for t in texts), what, 60)

    try:
        browser.get(f"{url}/runs")
        shows("body", {run["name"], "mario-gan"}, "the runs list to show the flow run")
        browser.get(f"{url}/runs/flow-run/{run['id']}")
        shows("body", {run["name"], "Running stage 'download'"}, "the flow run page with DVC's log")
        time.sleep(2)  # let the timeline graph finish drawing
        shot = tmp_path / "prefect.png"
        assert browser.save_screenshot(str(shot))

        browser.find_element(By.ID, "task-runs").click()
        shows("#task-runs-content", set(stage_order(root)), "the task runs tab to list every stage")
        browser.find_element(By.ID, "artifacts").click()
        shows("#artifacts-content", KEYS - {"mario-gan-train-progress"}, "the artifacts tab")

        # The sample grid is a markdown artifact with the PNG inline: the browser decodes it.
        (samples,) = api(
            url,
            "artifacts/filter",
            {"artifacts": {"key": {"any_": ["mario-gan-samples"]}, "flow_run_id": {"any_": [run["id"]]}}},
        )
        browser.get(f"{url}/artifacts/artifact/{samples['id']}")
        grid = wait_for(
            lambda: [
                i for i in browser.find_elements(By.TAG_NAME, "img") if i.get_attribute("naturalWidth") != "0"
            ],
            "the sample grid to render",
            60,
        )
        assert grid[0].get_attribute("src").startswith("data:image/png;base64,")
    finally:
        browser.quit()
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("PREFECT_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / target)
