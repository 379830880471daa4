"""End to end: the real `dvc repro`, `dvc exp run` and Prefect flow on tiny params."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import yaml
from PIL import Image

from pipeline.curate import read_manifest, write_manifest
from tests.conftest import ROOT, make_project, sh

pytestmark = pytest.mark.e2e

STAGES = ["download", "dedup", "curate", "resize", "train", "sample", "evaluate"]
RAN = re.compile(r"Running stage '([^']+)'")


def ran(proc) -> list[str]:
    return RAN.findall(proc.stdout + proc.stderr)


def outs_md5(root) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {
        f"{name}:{o['path']}": o["md5"]
        for name, stage in lock["stages"].items()
        for o in stage.get("outs", [])
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("e2e") / "proj")
    first = sh("dvc", "repro", cwd=root)
    return root, first


def test_repro_runs_every_stage_in_order(project):
    root, first = project
    assert ran(first) == STAGES
    grid = Image.open(root / "samples/grid.png")
    assert grid.mode == "RGB" and grid.size == (4 * 34 + 2, 2 * 34 + 2)
    assert len(list((root / "samples").glob("[0-9]*.png"))) == 8
    assert (root / "data/processed/contact_sheet.png").exists()
    metrics = json.loads((root / "dvclive/metrics.json").read_text())
    assert "loss_d" in metrics["train"]
    swd = json.loads((root / "metrics/evaluate.json").read_text())
    assert swd["swd"]["avg"] > 0 and swd["floor"]["avg"] > 0 and {"32", "16"} <= set(swd["swd"])
    assert (root / "samples/interpolation.gif").exists() and (root / "samples/nearest.png").exists()
    # Outputs are DVC's, not git's.
    assert "data/raw" not in sh("git", "status", "--porcelain", "--untracked-files=all", cwd=root).stdout


def test_second_repro_runs_nothing(project):
    root, _ = project
    again = sh("dvc", "repro", cwd=root)
    assert ran(again) == []
    assert "are up to date" in again.stdout + again.stderr


def test_editing_the_manifest_reruns_from_curate(project):
    root, _ = project
    path = root / "data/curation/manifest.csv"
    manifest = read_manifest(path)
    accepted = sorted(i for i, r in manifest.rows.items() if r["decision"] == "accept")
    kept = (root / "data/dedup/candidates.csv").read_text()
    victim = next(i for i in accepted if i in kept)
    manifest.set(victim, "reject", "changed my mind")
    write_manifest(path, manifest)
    proc = sh("dvc", "repro", cwd=root)
    assert ran(proc) == ["curate", "resize", "train", "sample", "evaluate"]
    assert victim not in (root / "data/curated/accepted.csv").read_text()


@pytest.mark.parametrize("section", ["sample", "evaluate"])
def test_a_stage_param_reruns_only_that_stage(project, section):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section]["seed"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(sh("dvc", "repro", cwd=root)) == [section]


def test_exp_run_reruns_train_onward_and_is_listed(project):
    root, _ = project
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-q", "-m", "baseline", cwd=root)
    proc = sh("dvc", "exp", "run", "-S", "train.lr=0.001", cwd=root)
    assert ran(proc) == ["train", "sample", "evaluate"]
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=root).stdout)
    text = json.dumps(shown)
    assert '"lr": 0.001' in text
    assert "dvclive/metrics.json" in text and "loss_g" in text


def test_exp_show_lists_swd_for_two_experiments(project):
    root, _ = project
    sh("dvc", "exp", "run", "-S", "train.lr=0.0005", cwd=root)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=root).stdout)
    swd = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                lr = data["params"]["params.yaml"]["data"]["train"]["lr"]
                swd[lr] = data["metrics"]["metrics/evaluate.json"]["data"]["swd"]["avg"]
    assert set(swd) >= {0.001, 0.0005}, swd
    assert all(v > 0 for v in swd.values())


def test_the_readmes_comparison_shows_changed_params_and_swd(project):
    root, _ = project  # after the two experiments above, which changed train.lr only
    readme = (ROOT / "README.md").read_text().splitlines()
    command = next(line for line in readme if line.startswith("dvc exp show --only-changed --drop"))
    header = sh(*shlex.split(command), "--csv", cwd=root).stdout.splitlines()[0].split(",")
    columns = [c for c in header if c not in ("Experiment", "rev", "typ", "Created", "parent")]
    assert columns == ["swd.avg", "swd.over_floor", "floor.avg", "train.lr"]


def test_bad_manifest_fails_the_stage_with_one_clear_line(project, tmp_path):
    root, _ = project
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    manifest = copy / "data/curation/manifest.csv"
    manifest.write_text(manifest.read_text().replace(",accept,", ",acept,", 1))
    proc = sh("dvc", "repro", cwd=copy, check=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "manifest.csv:" in errors[0] and "unknown decision 'acept'" in errors[0]
    # Nothing already produced is lost.
    assert (copy / "models/generator.pt").exists()
