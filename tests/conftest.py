"""Shared fixtures: tiny params, and throwaway copies of the project in a git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough that a full `dvc repro` takes seconds on 2 cores.
TINY = {
    "download": {"count": 40},
    "resize": {"size": 64, "workers": 1},
    "train": {"resolution": 32, "channels": 8, "batch_size": 16, "kimg": 0.1, "log_kimg": 0.05},
    "sample": {"n": 8, "nrow": 4, "interpolation_points": 2, "interpolation_steps": 3},
    "evaluate": {"n": 16, "patches_per_image": 32, "projections": 64},
}

PROJECT_FILES = [
    "pipeline",
    "flows",
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "data/curation/manifest.csv",
]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = ""
    e["DVC_NO_ANALYTICS"] = "1"
    e["TQDM_DISABLE"] = "1"
    for k, v in {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }.items():
        e.setdefault(k, v)
    return e


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in `cwd`; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


def write_params(root: Path, extra: dict) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(params, extra), sort_keys=False))


def make_project(dest: Path, extra: dict | None = None) -> Path:
    """Copy the project into `dest`, with tiny params, as a git repo with one commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PROJECT_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    write_params(dest, merge(TINY, extra or {}))
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-q", "-m", "test project", cwd=dest)
    return dest


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run a test with the working directory in an empty temp folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_collection_modifyitems(config, items) -> None:
    """`live` tests reach the real internet: they run only when asked for with `-m live`."""
    if "live" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="asks the real search engines; run with `pytest -m live` (needs internet)")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny downloaded and deduplicated set, made once per test module."""
    from tests.test_review_api import make_dataset

    root = tmp_path_factory.mktemp("review-data")
    return root, make_dataset(root)


@pytest.fixture
def data(in_tmp, dataset) -> dict:
    """A fresh copy of that set, in the test's own folder."""
    root, info = dataset
    shutil.copytree(root / "data", in_tmp / "data")
    shutil.copy2(root / "params.yaml", in_tmp / "params.yaml")
    return info
