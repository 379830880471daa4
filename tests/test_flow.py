"""The Prefect flow runs DVC's stages: same order, same outputs, same caching."""

from __future__ import annotations

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline_flow import pipeline_flow, stage_order
from tests.conftest import ROOT, make_project, sh

pytestmark = pytest.mark.e2e

STAGES = ["download", "dedup", "curate", "resize", "train", "sample"]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def task_states(flow_state) -> dict[str, tuple[str, str]]:
    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: (r.state.type.value, r.state.name) for r in runs}


def test_stage_order_comes_from_dvc():
    assert stage_order(ROOT) == STAGES


def test_flow_runs_the_stages_then_shows_them_cached(harness, tmp_path):
    root = make_project(tmp_path / "proj")
    first = pipeline_flow(repo=str(root), return_state=True)
    assert first.is_completed(), first.message
    assert first.result() == dict.fromkeys(STAGES, "ran")
    assert task_states(first) == {s: ("COMPLETED", "Completed") for s in STAGES}
    assert (root / "samples/grid.png").exists()

    # The flow left DVC's state exactly as `dvc repro` would.
    status = sh("dvc", "repro", cwd=root)
    assert "Running stage" not in status.stdout

    second = pipeline_flow(repo=str(root), return_state=True)
    assert second.result() == dict.fromkeys(STAGES, "cached")
    assert task_states(second) == {s: ("COMPLETED", "Cached") for s in STAGES}

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"mario-gan-counts", "mario-gan-metrics", "mario-gan-samples"} <= keys

    # Same outputs as `dvc repro` in a separate copy of the project.
    other = make_project(tmp_path / "other")
    sh("dvc", "repro", cwd=other)
    lock_a = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    lock_b = yaml.safe_load((other / "dvc.lock").read_text())["stages"]
    for stage in ["download", "dedup", "curate", "resize"]:
        assert lock_a[stage]["outs"] == lock_b[stage]["outs"], stage


def test_a_failing_stage_fails_its_task_and_stops_the_flow(harness, tmp_path):
    root = make_project(tmp_path / "proj")
    manifest = root / "data/curation/manifest.csv"
    manifest.write_text(manifest.read_text().replace(",accept,", ",maybe,", 1))
    state = pipeline_flow(repo=str(root), return_state=True)
    assert state.is_failed()
    states = task_states(state)
    assert states["curate"][0] == "FAILED"
    assert "resize" not in states and "train" not in states
    with pytest.raises(RuntimeError, match="unknown decision 'maybe'"):
        state.result()
