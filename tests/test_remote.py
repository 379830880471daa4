"""Sharing through a DVC remote: a second clone pulls and has nothing to re-run.

The round trip a second person makes (README "Sharing data and models"): clone A runs
the pipeline, pushes to a remote and commits; clone B clones, pulls, and `dvc repro`
must run no stage, in particular not `download` (search results change daily).
"""

from __future__ import annotations

import pytest

from tests.conftest import make_project, sh
from tests.test_e2e import ran

pytestmark = pytest.mark.e2e


def test_a_pulled_clone_reruns_no_stage(tmp_path):
    a = make_project(tmp_path / "a")
    remote = tmp_path / "remote"
    sh("dvc", "repro", cwd=a)
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=a)
    sh("dvc", "push", cwd=a)
    sh("git", "add", "-A", cwd=a)
    sh("git", "commit", "-q", "-m", "run", cwd=a)

    b = tmp_path / "b"
    sh("git", "clone", "-q", str(a), str(b), cwd=tmp_path)
    sh("dvc", "pull", cwd=b)
    proc = sh("dvc", "repro", cwd=b)
    assert ran(proc) == [], proc.stdout
    assert "changed" not in sh("dvc", "status", cwd=b).stdout
    # Pulled, not rebuilt: the same model and the checkpoint to resume from.
    for rel in ("models/generator.pt", "models/checkpoint.pt", "samples/grid.png"):
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
    # Machine-local caches stay local: neither clone's workspace nor the remote holds them.
    assert not (b / ".cache").exists()
    assert (a / ".cache/dedup").is_dir()
