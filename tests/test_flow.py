"""The Prefect flow runs DVC's stages: same order, same outputs, same caching."""

from __future__ import annotations

import base64
import io
import json

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline_flow import TrainProgress, is_dvc_hint, pipeline_flow, run_stage, stage_order
from pipeline.progress import LogProgress
from tests.conftest import ROOT, TINY, make_project, sh


def dvc_yaml_stages(root=ROOT) -> list[str]:
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def task_runs(flow_state) -> dict:
    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r for r in runs}


def task_states(flow_state) -> dict[str, tuple[str, str]]:
    return {name: (r.state.type.value, r.state.name) for name, r in task_runs(flow_state).items()}


def artifacts(flow_state) -> dict:
    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def table(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_stage_order_comes_from_dvc():
    order = stage_order(ROOT)
    assert sorted(order) == sorted(dvc_yaml_stages())
    # Upstream first: every stage comes after the stages whose outputs it reads.
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    producer = {
        out if isinstance(out, str) else next(iter(out)): s
        for s, d in stages.items()
        for out in d.get("outs", [])
    }
    for s, d in stages.items():
        for dep in d.get("deps", []):
            for out, up in producer.items():
                if dep == out or dep.startswith(out + "/"):
                    assert order.index(up) < order.index(s), (up, s)


def test_training_progress_follows_the_trainers_progress_lines(monkeypatch):
    seen: list[tuple[float, str]] = []
    progress = TrainProgress("train")
    monkeypatch.setattr(progress, "set", lambda pct, desc: seen.append((pct, desc)))
    now = [0.0]
    monkeypatch.setattr("tqdm.std.time", lambda: now[0])
    buf = io.StringIO()
    # What the trainer's bar writes when its output is not a terminal (the flow reads a pipe).
    bar = LogProgress(total=3200, desc="train", unit="img", unit_scale=True, file=buf)
    for _ in range(4):
        now[0] += 10
        bar.set_postfix(loss_d="1.234", loss_g="0.567", refresh=False)
        bar.update(800)
    bar.close()
    lines = buf.getvalue().splitlines() + ["train (loading): 50% 10/20 img, 00:01 elapsed"]  # another bar
    for line in lines:
        progress.feed(line)
    assert seen[0] == (25.0, "train: 800/3.20k img, loss_d=1.234, loss_g=0.567")
    assert seen[-1] == (100.0, "train: 3.20k/3.20k img, loss_d=1.234, loss_g=0.567")
    # tqdm's own bar text is not read at all.
    progress.feed("train:  50%|#####     | 1.60k/3.20k [00:10<00:10, 160img/s, loss_d=1.2, loss_g=0.5]")
    assert len(seen) == 4


def test_dvc_git_advice_is_left_out_of_task_logs():
    # What `dvc repro` 3.67 prints after a stage, line by line.
    advice = [
        "To track the changes with git, run:",
        "\tgit add dvc.lock data/.gitignore",
        "\tgit add dvc.lock 'my data/.gitignore'",  # DVC quotes paths with spaces
        "To enable auto staging, run:",
        "\tdvc config core.autostage true",
        "Use `dvc push` to send your updates to remote storage.",
    ]
    assert all(is_dvc_hint(line) for line in advice)
    kept = [
        "Running stage 'train':",
        "> python -m pipeline train",
        "git add pipeline/train.py",
        "dedup: 400 images",
    ]
    assert not any(is_dvc_hint(line) for line in kept)


def test_only_download_retries():
    assert run_stage.retries == 0


@pytest.mark.e2e
def test_flow_runs_the_stages_then_shows_them_cached(harness, tmp_path):
    root = make_project(tmp_path / "proj")
    stages = stage_order(root)
    first = pipeline_flow(repo=str(root), return_state=True)
    assert first.is_completed(), first.message
    assert first.result() == {"stages": dict.fromkeys(stages, "ran"), "experiment": None}
    assert task_states(first) == {s: ("COMPLETED", "Completed") for s in stages}
    assert (root / "samples/grid.png").exists()

    found = artifacts(first)
    counts = {(r["stage"], r["what"]): r for r in table(found["mario-gan-counts"])}
    assert counts["download", "downloaded"]["count"] == TINY["download"]["count"]
    processed = len((root / "data/processed/index.csv").read_text().splitlines()) - 1
    assert counts["resize", "processed"]["count"] == processed
    assert counts["resize", "processed"]["this run"] == "ran"
    metrics = table(found["mario-gan-metrics"])
    assert {"train/loss_d", "train/loss_g"} <= {r["metric"] for r in metrics}
    # Every metrics file dvc.yaml declares (DVCLive's, evaluate's), none listed here.
    declared = {
        m if isinstance(m, str) else next(iter(m))
        for d in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values()
        for m in d.get("metrics", [])
    }
    assert {r["file"] for r in metrics} == declared
    samples = found["mario-gan-samples"].data
    png = base64.b64decode(samples.split("base64,", 1)[1].split(")", 1)[0])
    assert png == (root / "samples/grid.png").read_bytes()
    progress = found["mario-gan-train-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0

    # The flow left DVC's state exactly as `dvc repro` would.
    status = sh("dvc", "repro", cwd=root)
    assert "Running stage" not in status.stdout

    second = pipeline_flow(repo=str(root), return_state=True)
    assert second.result()["stages"] == dict.fromkeys(stages, "cached")
    assert task_states(second) == {s: ("COMPLETED", "Cached") for s in stages}
    # A cached train stage does not pretend to be training.
    assert "mario-gan-train-progress" not in artifacts(second)
    assert table(artifacts(second)["mario-gan-counts"])[0]["this run"] == "cached"

    # Same outputs as `dvc repro` in a separate copy of the project.
    # The data stages suffice: the flow runs the very commands `dvc repro` runs.
    other = make_project(tmp_path / "other")
    sh("dvc", "repro", "resize", cwd=other)
    lock_a = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    lock_b = yaml.safe_load((other / "dvc.lock").read_text())["stages"]
    assert set(lock_b) == {"download", "dedup", "curate", "resize"}
    for stage in lock_b:
        assert lock_a[stage]["outs"] == lock_b[stage]["outs"], stage


@pytest.mark.e2e
def test_overrides_make_a_dvc_experiment_named_on_the_flow_run(harness, tmp_path):
    root = make_project(tmp_path / "proj")
    state = pipeline_flow(
        stages=["download"],
        overrides=["download.count=30"],
        experiment="fewer",
        repo=str(root),
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert state.result() == {"stages": {"download": "ran"}, "experiment": "fewer"}
    assert len((root / "data/raw/index.csv").read_text().splitlines()) == 31
    assert yaml.safe_load((root / "params.yaml").read_text())["download"]["count"] == 30

    exps = json.loads(sh("dvc", "exp", "show", "--json", cwd=root).stdout)
    named = {e["name"]: e for b in exps for e in (b.get("experiments") or [])}
    assert "fewer" in named
    revs = named["fewer"]["revs"][0]["data"]
    assert revs["params"]["params.yaml"]["data"]["download"]["count"] == 30

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert "exp:fewer" in run.tags
    assert "fewer" in artifacts(state)["mario-gan-experiment"].data
    assert set(task_states(state)) == {"set params", "download", "dvc exp run"}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-1", r"params.yaml: train.lr"),
        ("train.nope=1", r"override 'train.nope=1': DVC rejected it"),
    ],
)
def test_a_bad_override_stops_before_any_stage(harness, tmp_path, override, message):
    root = make_project(tmp_path / "proj")
    before = (root / "params.yaml").read_text()
    state = pipeline_flow(overrides=[override], repo=str(root), return_state=True)
    assert state.is_failed()
    assert set(task_states(state)) == {"set params"}
    with pytest.raises(Exception, match=message):
        state.result()
    assert (root / "params.yaml").read_text() == before


@pytest.mark.e2e
def test_download_retries_with_exponential_backoff(harness, tmp_path):
    root = make_project(tmp_path / "proj")
    # A download that fails its first attempt, as a flaky network would.
    marker = tmp_path / "tried"
    (root / "flaky.py").write_text(
        "import pathlib, sys\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.touch()\n"
        "    sys.exit('error: connection reset by peer')\n"
    )
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc_yaml["stages"]["download"]["cmd"] = "python flaky.py && " + dvc_yaml["stages"]["download"]["cmd"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))

    state = pipeline_flow(
        stages=["download"], download_retries=2, retry_delay_seconds=0.5, repo=str(root), return_state=True
    )
    assert state.is_completed(), state.message
    run = task_runs(state)["download"]
    assert run.run_count == 2
    assert run.empirical_policy.retries == 2
    assert run.empirical_policy.retry_delay == [0.5, 1.0]


@pytest.mark.e2e
def test_a_failing_stage_fails_its_task_and_stops_the_flow(harness, tmp_path):
    root = make_project(tmp_path / "proj")
    manifest = root / "data/curation/manifest.csv"
    manifest.write_text(manifest.read_text().replace(",accept,", ",maybe,", 1))
    state = pipeline_flow(repo=str(root), return_state=True)
    assert state.is_failed()
    states = task_states(state)
    assert states["curate"][0] == "FAILED"
    downstream = stage_order(root)[stage_order(root).index("curate") + 1 :]
    assert downstream and not set(downstream) & set(states)
    with get_client(sync_client=True) as client:
        task_state = client.read_task_run(task_runs(state)["curate"].id).state
    assert "unknown decision 'maybe'" in task_state.message
    with pytest.raises(RuntimeError, match="unknown decision 'maybe'"):
        state.result()
