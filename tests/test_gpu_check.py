"""The CPU half of the GPU path (issue 15): what can be checked without a GPU, on every run.

- The checks behind the CUDA tests (tests/test_gpu.py), run on CPU: bf16
  autocast, fused Adam, channels_last, exact resume, the stages; and
  torch.compile, which is slow on CPU (about 1-2 min cold on 2 cores).
- benchmarks/gpu_check.py --device cpu --tiny, run as a bare GPU machine runs
  it: every third-party module is refused except torch (with its own
  dependencies), torchvision, numpy, Pillow, PyYAML and tqdm.
- The bf16 peak table and the README's recipe that the check trains.
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from pipeline import curate
from pipeline.params import defaults, params_from_dict
from tests import test_gpu
from tests.conftest import ROOT, env, merge

CPU = torch.device("cpu")
GPU_MACHINE = ["torch", "torchvision", "numpy", "pillow", "pyyaml", "tqdm"]
# Hides every module outside the standard library, this project and ALLOWED, as if not installed:
# `import x` raises ModuleNotFoundError and importlib.util.find_spec("x") gives None.
BLOCKER = """\
import sys

ALLOWED = {allowed!r}


def _hidden(name):
    top = name.partition(".")[0]
    # _sysconfigdata_*: the interpreter's build settings, standard library but not listed as such
    return not (top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_sysconfigdata"))


class _Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        find = getattr(self.finder, "find_spec", None)
        return None if _hidden(name) or find is None else find(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
"""


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
train_speed = _load("train_speed", ROOT / "benchmarks" / "train_speed.py")


def gpu_machine_modules() -> set[str]:
    """Top-level modules of the GPU machine's packages and everything they require (torch's sympy,
    jinja2, ...), plus this project's own."""
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    wanted, todo = set(), list(GPU_MACHINE)
    while todo:
        name = todo.pop()
        if norm(name) in wanted:
            continue
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        wanted.add(norm(name))
        todo += [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requires if "extra ==" not in r]
    modules = {m for m, dists in md.packages_distributions().items() if any(norm(d) in wanted for d in dists)}
    return modules | {"pipeline", "benchmarks", "tests", "sitecustomize"}


@pytest.fixture
def bare_machine(tmp_path):
    """Environment for a subprocess that can import only what the GPU machine has."""
    site = tmp_path / "bare_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(allowed=sorted(gpu_machine_modules())))
    return {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1", "HOME": str(tmp_path)}


def test_the_blocker_refuses_what_the_gpu_machine_lacks(bare_machine):
    code = "import importlib\nfor m in ('dvc', 'prefect', 'imagehash', 'dvclive', 'requests'):\n"
    code += (
        "    try:\n        importlib.import_module(m)\n    except ImportError:\n        print('refused', m)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=bare_machine, capture_output=True, text=True)
    assert out.stdout.split("\n")[:-1] == [
        f"refused {m}" for m in ("dvc", "prefect", "imagehash", "dvclive", "requests")
    ], out.stderr


def test_the_training_path_imports_only_what_the_gpu_machine_has(bare_machine):
    modules = [
        "pipeline.__main__",
        "pipeline.train",
        "pipeline.sample",
        "pipeline.evaluate",
        "pipeline.generate",
        "pipeline.resize",
        "pipeline.curate",
        "pipeline.synthetic",
        "tests.test_gpu",
    ]
    code = "import importlib, runpy, sys\n"
    code += f"for m in {modules!r}:\n    importlib.import_module(m)\n"
    code += f"runpy.run_path({str(ROOT / 'benchmarks' / 'train_speed.py')!r}, run_name='imported')\n"
    code += f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_check.py')!r}, run_name='imported')\n"
    code += "print('ok')\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=bare_machine, capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok", out.stderr[-3000:]


def test_gpu_check_tiny_on_cpu_runs_every_step_on_a_bare_machine(tmp_path, bare_machine):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(out), "--device", "cpu", "--tiny"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=bare_machine, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["errors"] == []

    tests = {t["name"]: t["status"] for t in report["tests"]["tests"]}
    assert set(tests) == {n for n in dir(test_gpu) if n.startswith("test_")}
    assert set(tests.values()) == {"skipped"}  # no CUDA here

    speed = report["speed"]
    assert [r["loop"] for r in speed["rows"]] == ["reference", "ours", "ours+aug"]
    assert all(r["size"] == 32 and r["img_per_sec"] > 0 and r["peak_mib"] > 0 for r in speed["rows"])
    assert speed["rows"][1]["flops_per_img"] > 0 and speed["peak_entry"] is None
    assert speed["ratio"] == pytest.approx(speed["rows"][1]["img_per_sec"] / speed["rows"][0]["img_per_sec"])
    prof = speed["profile"]
    assert prof["clock"] == "cpu" and prof["ms_per_step"] > 0 and prof["top"]
    assert sum(prof["shares"].values()) == pytest.approx(1.0) and prof["shares"]["convolutions"] > 0

    recipe = report["recipe"]
    assert recipe["images"] == gpu_check.TINY_IMAGES and recipe["resolution"] == 32
    assert recipe["params"]["upsample"] == gpu_check.readme_recipe()["train"]["upsample"]
    train = recipe["train"]
    assert train["steps"] > 0 and train["kimg"] == pytest.approx(train["steps"] * 8 / 1000)
    assert train["loop_img_per_sec"] >= train["img_per_sec"] > 0
    assert recipe["hours_for_2000_kimg"] == pytest.approx(2e6 / train["loop_img_per_sec"] / 3600)
    assert train["stop_exit_code"] == 2  # the stage's "stopped, saved the checkpoint" status
    assert recipe["evaluate"]["swd"]["avg"] > 0 and recipe["evaluate"]["floor"]["avg"] > 0
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 34 + 2, 2 * 34 + 2)  # sample.n 8 in 4 columns of 32 px, 2 px gaps
    md_text = (out / "report.md").read_text()
    for heading in ("## CUDA tests", "## Training speed", "Where the time goes", "## The README's recipe"):
        assert heading in md_text
    # The stages ran on the manifest's images, squared by the resize stage, and never saw DVC.
    index = (out / "run" / "data" / "processed" / "index.csv").read_text().splitlines()
    manifest = curate.read_manifest(ROOT / "data" / "curation" / "manifest.csv")
    first = next(i for i in manifest.rows if manifest.decision(i) == "accept")
    assert len(index) == 1 + gpu_check.TINY_IMAGES and index[1].startswith(f"{first},")
    assert not (out / "run" / "dvclive").exists()


def test_the_readme_recipe_is_valid_params_at_256():
    recipe = gpu_check.readme_recipe()
    assert recipe["resize"]["size"] == recipe["train"]["resolution"] == 256
    p = params_from_dict(recipe)
    assert p.train.batch_size == 64 and p.train.channels == p.train.d_width == 64


def test_a_readme_without_the_recipe_is_one_clear_error(tmp_path):
    (tmp_path / "README.md").write_text(
        "# mario-gan\n\n### A real Mario run on a GPU\n\n```sh\ndvc repro\n```\n"
    )
    with pytest.raises(
        SystemExit, match=r"README.md: no `dvc exp run -S ...` block under .*restore the recipe"
    ):
        gpu_check.readme_recipe(tmp_path / "README.md")


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        # torch.cuda.get_device_name() as reported on these GPUs
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A10G", None),  # not an A10: no guess
        ("Tesla T4", None),  # no bf16 tensor cores
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_the_bf16_peak_is_found_by_whole_name(name, entry):
    found = train_speed.peak_bf16(name)
    assert (found[0] if found else None) == entry
    if found:
        assert found[1] == train_speed.PEAK_BF16_TFLOPS[entry] * 1e12


# -- the CUDA tests' checks, on CPU ----------------------------------------------------------------


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bf16_autocast_on_cpu_trains_like_fp32(one_thread):
    gaps = test_gpu.check_precision(CPU)
    assert gaps["weight_gap"] > 0  # bf16 really rounds differently


def test_fused_adam_and_channels_last_on_cpu(one_thread):
    test_gpu.check_fused_adam(CPU)
    test_gpu.check_channels_last(CPU)


def test_resume_is_exact_on_cpu(tmp_path, one_thread):
    test_gpu.check_resume_exact(CPU, tmp_path)


def test_train_sample_and_evaluate_stages_on_cpu(tmp_path, one_thread):
    test_gpu.check_stages(CPU, tmp_path)


@pytest.mark.e2e  # inductor compiles C++ for G and D: 1-2 min cold on 2 cores, too slow for the fast tier
def test_compile_on_cpu_trains_like_eager(one_thread):
    test_gpu.check_compile(CPU, precision="fp32")


@pytest.mark.e2e  # the real download, dedup, curate and resize stages on the 400 built-in images: about a minute
def test_the_built_in_dataset_is_what_the_pipeline_makes(tmp_path):
    params = merge(defaults(), {"resize": {"size": 32}, "train": {"resolution": 32}})
    pipeline_dir, check_dir = tmp_path / "pipeline", tmp_path / "check"
    for d in (pipeline_dir, check_dir):
        d.mkdir()
        (d / "params.yaml").write_text(yaml.safe_dump(params))
    (pipeline_dir / "data" / "curation").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "curation" / "manifest.csv", pipeline_dir / "data" / "curation")
    for stage in ("download", "dedup", "curate", "resize"):
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", stage],
            cwd=pipeline_dir,
            env=env() | {"PYTHONPATH": str(ROOT)},  # this tree's stages, not an installed copy
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{stage}: {proc.stderr[-2000:]}"
    n = gpu_check.build_dataset(check_dir, params)

    def images(root: Path) -> dict[str, bytes]:
        processed = root / "data" / "processed"
        rows = (processed / "index.csv").read_text().splitlines()[1:]
        out = {}
        for row in rows:
            image_id = row.split(",")[0]
            with Image.open(processed / f"{image_id}.png") as img:
                out[image_id] = img.tobytes()
        return out

    made, expected = images(check_dir), images(pipeline_dir)
    assert len(made) == n and len(expected) > 200
    assert {k: made[k] for k in expected} == expected  # the pipeline's images, pixel for pixel
    # The rest: accepted in the manifest, but grouped away by dedup, which gpu_check cannot run.
    extra = set(made) - set(expected)
    with open(pipeline_dir / "data" / "dedup" / "groups.csv", newline="") as fh:
        kept = {r["id"]: r["kept"] for r in csv.DictReader(fh)}
    assert len(extra) <= 3, extra
    assert all(kept[image_id] == "false" for image_id in extra), extra
