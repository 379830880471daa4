"""Hand-over: data and models through a DVC remote, and the generator as an export.

The round trip a second person makes (README "Sharing data and models"): clone A runs
the pipeline, pushes to a local-folder remote and commits; clone B clones, pulls, and
`dvc repro` must run no stage, in particular not `download` (search results change
daily). Then B exports the pulled generator (README "Handing over a trained model").
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipeline.__main__ import main
from tests.conftest import env, make_project, sh
from tests.test_e2e import ran

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("handover")
    a = make_project(tmp / "a")
    sh("dvc", "repro", cwd=a)
    sh("dvc", "remote", "add", "-d", "shared", str(tmp / "remote"), cwd=a)
    sh("dvc", "push", cwd=a)
    sh("git", "add", "-A", cwd=a)
    sh("git", "commit", "-q", "-m", "run", cwd=a)
    b = tmp / "b"
    sh("git", "clone", "-q", str(a), str(b), cwd=tmp)
    sh("dvc", "pull", cwd=b)
    return a, b


def test_a_pulled_clone_reruns_no_stage(clones):
    a, b = clones
    proc = sh("dvc", "repro", cwd=b)
    assert ran(proc) == [], proc.stdout
    assert "changed" not in sh("dvc", "status", cwd=b).stdout
    # Pulled, not rebuilt: the same model, and the checkpoint to continue training from.
    for rel in ("models/generator.pt", "models/checkpoint.pt", "samples/grid.png", "data/raw/index.csv"):
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
    # Machine-local caches stay local: the hash cache is A's alone.
    assert (a / ".cache/dedup").is_dir() and not (b / ".cache").exists()


# Run in a fresh interpreter that cannot import this package (nor DVC, Prefect): the
# export must load with torch, safetensors and its own model.py only.
LOAD_EXPORT = """
import json, sys
sys.modules["pipeline"] = None
out, dest = sys.argv[1], sys.argv[2]
sys.path.insert(0, out)
import torch
from safetensors.torch import load_file, save_file
from model import build_generator
config = json.load(open(out + "/config.json"))
g = build_generator(config).eval()
g.load_state_dict(load_file(out + "/generator.safetensors"))
z = torch.randn(8, config["latent_dim"], generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    save_file({"x": g(z)}, dest)
extra = sorted(m for m, mod in sys.modules.items() if mod and m.split(".")[0] in ("pipeline", "dvc", "prefect", "torchvision"))
assert not extra, extra
"""
# The same images from the project's own models/generator.pt, also in a fresh process.
LOAD_PROJECT = """
import sys, torch
from safetensors.torch import save_file
from pipeline.model import load_generator
g, config = load_generator(sys.argv[1])
z = torch.randn(8, config["latent_dim"], generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    save_file({"x": g(z)}, sys.argv[2])
"""


def python(code: str, *args, cwd) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, *map(str, args)],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_export_loads_alone_and_draws_the_same_images(clones, tmp_path):
    from safetensors.torch import load_file

    _, b = clones
    out = tmp_path / "export"
    sh(sys.executable, "-m", "pipeline", "export", "--out", str(out), cwd=b)
    python(LOAD_EXPORT, out, tmp_path / "exported.st", cwd=tmp_path)
    python(LOAD_PROJECT, b / "models/generator.pt", tmp_path / "project.st", cwd=b)
    exported, project = load_file(tmp_path / "exported.st")["x"], load_file(tmp_path / "project.st")["x"]
    assert exported.shape == (8, 3, 32, 32)
    assert exported.dtype == project.dtype and bool((exported == project).all())  # bit for bit

    card = (out / "MODEL_CARD.md").read_text()
    metrics = json.loads((b / "metrics/evaluate.json").read_text())
    processed = (b / "data/processed/index.csv").read_text().splitlines()[1:]
    assert f"| swd/avg | {metrics['swd']['avg']:.4g} |" in card
    assert f"| floor/avg | {metrics['floor']['avg']:.4g} |" in card
    assert f"| swd/over_floor | {metrics['swd']['over_floor']:.4g} |" in card
    assert f"{len(processed)} images" in card and f"| synthetic | {len(processed)} |" in card
    assert "| not reported by the source |" in card  # the synthetic source has no licences
    meta = torch.load(b / "models/generator.pt", weights_only=True)["meta"]
    assert f"Trained for {meta['kimg']:g} kimg ({meta['steps']} steps)" in card and "kimg: 0.1" in card
    listed = (out / "training_images.csv").read_text().splitlines()
    assert len(listed) == len(processed) + 1
    assert {line.split(",")[0] for line in listed[1:]} == {line.split(",")[0] for line in processed}
    assert (out / "samples.png").stat().st_size > 1000


def test_export_without_a_model_is_one_error_line(in_tmp, capsys):
    assert main(["export", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: models/generator.pt: not found; run `dvc repro train` or `dvc pull` first"]
    assert not (in_tmp / "x").exists()
