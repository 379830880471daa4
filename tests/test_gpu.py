"""CUDA checks of the trainer and of the sample and evaluate stages (issue 15).

On a machine with CUDA: `pytest -m gpu` (skipped without CUDA), or, where pytest
is not installed, `python tests/test_gpu.py [--json PATH]`, which is what
benchmarks/gpu_check.py runs on a bare GPU machine (torch, torchvision, numpy,
Pillow, PyYAML and tqdm only). So the tests take nothing from pytest but
`tmp_path`, and each one calls a `check_*` function of a device that
tests/test_gpu_check.py also runs on CPU, where it can be checked on every
commit.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

# cuBLAS is deterministic only with a fixed workspace, which must be set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # when run as a script

import torch
from PIL import Image

from pipeline import evaluate, paths, sample, train
from pipeline.images import write_csv_atomic
from pipeline.params import Params, TrainParams, from_defaults, params_from_dict
from pipeline.trainer import Trainer

try:
    import pytest
except ImportError:  # a bare GPU machine: the runner at the bottom runs these tests
    pytest = None

if pytest is not None:
    pytestmark = [
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ]

CUDA = torch.device("cuda")
# Figures a test measured, for the runner's JSON (benchmarks/gpu_check.py puts them in its report).
MEASURED: dict[str, float] = {}


# -- helpers --------------------------------------------------------------------------------------


def blocky_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) pictures of 8x8 random blocks: pixel-art-like, with edges to learn."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    return small.repeat_interleave(size // 8, 2).repeat_interleave(size // 8, 3).contiguous()


def write_processed(root: Path, n: int, size: int) -> None:
    """root/data/processed as the resize stage leaves it: PNGs and index.csv."""
    out = root / paths.PROCESSED
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, x in enumerate(blocky_images(n, size)):
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(out / f"b{i:03d}.png")
        rows.append({"id": f"b{i:03d}", "file": f"b{i:03d}.png"})
    write_csv_atomic(out / "index.csv", ["id", "file"], rows)


def stage_params(device: torch.device, size: int = 32, **train_params) -> Params:
    """Small params for whole stage runs: 32 px, 8 channels, 8 images a step."""
    t = {
        "resolution": size,
        "channels": 8,
        "batch_size": 8,
        "kimg": 0.08,
        "log_kimg": 0.016,
        "sample_kimg": 0.04,
        "checkpoint_kimg": 0.04,
        "eval_kimg": 0.0,
        "device": device.type,
        "threads": 1 if device.type == "cpu" else 0,
    }
    return params_from_dict(
        {
            "resize": {"size": size},
            "train": t | train_params,
            "sample": {"n": 8, "nrow": 4, "interpolation_points": 2, "interpolation_steps": 3},
            "evaluate": {"n": 16, "patches_per_image": 32, "projections": 64},
        }
    )


def trainer(device: torch.device, size: int = 32, **overrides) -> Trainer:
    p = from_defaults(TrainParams, resolution=size, channels=8, batch_size=8, **overrides)
    return Trainer(p, blocky_images(32, size), device)


def weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([q.detach().float().reshape(-1).cpu() for q in module.parameters()])


def relative_gap(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor) -> float:
    """How far two trained weight vectors are apart, in units of how far training moved them."""
    return float((a - b).norm() / (b - start).norm())


# -- checks (any device) --------------------------------------------------------------------------


def check_precision(device: torch.device, steps: int = 8) -> dict[str, float]:
    """bf16 autocast and fp32 train the same way: finite losses, close to each other, and bf16
    really computes the convolutions in bf16."""
    runs = {}
    for precision in ("fp32", "bf16"):
        t = trainer(device, precision=precision)
        conv_dtypes = set()
        hooks = [
            m.register_forward_hook(lambda m, i, o, seen=conv_dtypes: seen.add(o.dtype))
            for m in [*t.g.modules(), *t.d.modules()]
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
        ]
        start = weights(t.g)
        for _ in range(steps):
            t.step()
        for h in hooks:
            h.remove()
        want = torch.bfloat16 if precision == "bf16" else torch.float32
        assert conv_dtypes == {want}, f"{precision}: convolutions ran in {conv_dtypes}"
        (loss_d, loss_g, _, _), _ = t.take_stats()
        assert math.isfinite(loss_d) and math.isfinite(loss_g), (precision, loss_d, loss_g)
        runs[precision] = (loss_d, loss_g, weights(t.g), start)
    (d32, g32, w32, start), (d16, g16, w16, _) = runs["fp32"], runs["bf16"]
    assert abs(d16 - d32) < 0.05 and abs(g16 - g32) < 0.1, (
        f"losses fp32 {d32:.4f} {g32:.4f}, bf16 {d16:.4f} {g16:.4f}"
    )
    gap = relative_gap(w16, w32, start)
    assert gap < 0.5, f"bf16 weights are {gap:.2f} of the training step away from fp32's"
    return {"loss_d_gap": abs(d16 - d32), "loss_g_gap": abs(g16 - g32), "weight_gap": gap}


def check_fused_adam(device: torch.device) -> None:
    """Both optimizers are fused Adam (one kernel for all parameters), and a step runs with them."""
    t = trainer(device)
    for name, opt in (("G", t.opt_g), ("D", t.opt_d)):
        assert isinstance(opt, torch.optim.Adam), f"{name}: {type(opt).__name__}"
        assert opt.param_groups[0].get("fused") is True, f"{name}: Adam is not fused"
    t.step()
    assert all(len(s) for s in t.opt_g.state.values())


def check_channels_last(device: torch.device) -> None:
    """Every convolution of G and D gets its input and weight in channels_last, and gives it back."""
    t = trainer(device)
    seen: list[str] = []

    def check(m, inputs, output) -> None:
        for what, x in (("input", inputs[0]), ("weight", m.weight), ("output", output)):
            assert x.is_contiguous(memory_format=torch.channels_last), f"{m}: {what} is not channels_last"
        seen.append(type(m).__name__)

    convs = [
        m
        for m in [*t.g.modules(), *t.d.modules()]
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    hooks = [m.register_forward_hook(check) for m in convs]
    t.step()
    for h in hooks:
        h.remove()
    assert len(seen) >= len(convs), "some convolutions never ran"


def check_compile(device: torch.device, steps: int = 6, precision: str = "auto") -> dict[str, float]:
    """`compile: true` trains like eager: same losses and weights, within rounding. In bf16 the
    compiled kernels round at other places than eager ones, so its tolerance is wider."""
    eager, compiled = trainer(device, precision=precision), trainer(device, precision=precision, compile=True)
    start = weights(eager.g)
    for _ in range(steps):
        eager.step()
        compiled.step()
    (d_e, g_e, _, _), _ = eager.take_stats()
    (d_c, g_c, _, _), _ = compiled.take_stats()
    assert abs(d_e - d_c) < 0.02 and abs(g_e - g_c) < 0.05, (
        f"eager {d_e:.4f} {g_e:.4f}, compiled {d_c:.4f} {g_c:.4f}"
    )
    gap = relative_gap(weights(compiled.g), weights(eager.g), start)
    limit = 0.5 if eager.precision == "bf16" else 0.2
    assert gap < limit, f"compiled weights are {gap:.2f} of the training step away from eager's"
    return {"compile_weight_gap": gap}


def check_resume_exact(device: torch.device, root: Path) -> None:
    """A run stopped and continued (here: finished, then `kimg` raised) ends bit for bit where one
    uninterrupted run ends: weights, EMA and optimizer state. Deterministic kernels are asked for,
    since cuDNN's fastest ones sum in a varying order."""
    short, whole = stage_params(device, kimg=0.056), stage_params(device, kimg=0.12)
    states = {}
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name, runs in (("whole", [whole]), ("parts", [short, whole])):
                (root / name).mkdir()
                with contextlib.chdir(root / name):
                    write_processed(Path("."), 12, 32)
                    for p in runs:
                        train.run(p)
                    states[name] = torch.load(paths.CHECKPOINT, map_location="cpu", weights_only=True)
    finally:
        torch.use_deterministic_algorithms(was)
    # If the states differ, these name the ops torch could not make deterministic.
    why = sorted({str(w.message)[:200] for w in caught if "determinis" in str(w.message)})
    a, b = states["whole"], states["parts"]
    assert a["step"] == b["step"] == 15, (a["step"], b["step"])
    for key in ("G", "D", "G_ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resuming; {why}"
    for key in ("opt_G", "opt_D"):
        for i, s in a[key]["state"].items():
            for name, value in s.items():
                assert torch.equal(value, b[key]["state"][i][name]), f"{key} state {i}.{name} differs; {why}"


def check_stages(device: torch.device, root: Path) -> dict[str, float]:
    """The train, sample and evaluate stages run on `device` and write what they promise."""
    p = stage_params(device, eval_kimg=0.04)
    with contextlib.chdir(root):
        write_processed(Path("."), 12, 32)
        metrics = train.run(p)
        assert math.isfinite(metrics["train/loss_d"]) and math.isfinite(metrics["train/loss_g"])
        assert "eval/swd_avg" in metrics, sorted(metrics)
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        grid = sample.run(p)
        if cuda:  # the generator really ran on the GPU
            assert torch.cuda.max_memory_allocated() > 0
        with Image.open(grid) as img:
            assert img.size[0] > 4 * 32
        assert (paths.SAMPLES / "interpolation.gif").exists()
        scores = evaluate.run(p)
        assert scores["swd"]["avg"] > 0 and scores["floor"]["avg"] > 0, scores
        return {"swd_avg": scores["swd"]["avg"], "floor_swd_avg": scores["floor"]["avg"]}


def check_memory_256(device: torch.device) -> dict[str, float]:
    """A 256x256 step at batch 64 and 64 channels (the README's recipe) fits; returns its peak memory."""
    p = from_defaults(
        TrainParams,
        resolution=256,
        channels=64,
        batch_size=64,
        upsample="nearest",
        precision="auto",
        compile=False,
    )
    data = blocky_images(128, 256)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = Trainer(p, data, device)
    for _ in range(2):
        t.step()
    (loss_d, loss_g, _, _), _ = t.take_stats()
    assert math.isfinite(loss_d) and math.isfinite(loss_g), (loss_d, loss_g)
    out = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
        assert peak < total
        out = {"peak_mib_256_batch64": peak / 2**20, "total_mib": total / 2**20}
    return out


# -- the CUDA tests -------------------------------------------------------------------------------


def test_bf16_and_fp32_steps_are_finite_and_close():
    MEASURED.update(check_precision(CUDA))


def test_adam_is_fused():
    check_fused_adam(CUDA)


def test_channels_last_reaches_the_convolutions():
    check_channels_last(CUDA)


def test_compile_trains_like_eager():
    MEASURED.update(check_compile(CUDA))


def test_checkpoint_resume_continues_exactly(tmp_path):
    check_resume_exact(CUDA, tmp_path)


def test_train_sample_and_evaluate_stages_run_on_cuda(tmp_path):
    check_stages(CUDA, tmp_path)


def test_a_256px_batch_of_64_fits_and_reports_its_memory():
    measured = check_memory_256(CUDA)
    print(f"256x256, batch 64, 64 channels: peak {measured['peak_mib_256_batch64']:.0f} MiB")
    MEASURED.update(measured)


# -- runner for machines without pytest -----------------------------------------------------------


def run_all(only_cuda: bool = True) -> list[dict]:
    """Run every test_* above in file order; each gets a fresh tmp_path if it asks for one."""
    results = []
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    for name, fn in tests:
        if only_cuda and not torch.cuda.is_available():
            results.append({"name": name, "status": "skipped", "seconds": 0.0, "detail": "needs a CUDA GPU"})
            print(f"SKIP {name}: needs a CUDA GPU", flush=True)
            continue
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
                wants_tmp = "tmp_path" in inspect.signature(fn).parameters
                fn(Path(tmp)) if wants_tmp else fn()
            status, detail = "passed", ""
        except Exception as exc:
            status = "failed"
            detail = "".join(traceback.format_exception(exc)[-6:]).strip()
        seconds = time.perf_counter() - start
        results.append({"name": name, "status": status, "seconds": round(seconds, 2), "detail": detail})
        print(f"{status.upper():6} {name} ({seconds:.1f} s)", flush=True)
        if detail:
            print(detail, flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the CUDA tests without pytest.")
    ap.add_argument("--json", type=Path, help="write the results and measured figures here")
    args = ap.parse_args()
    results = run_all()
    if args.json:
        report = {"tests": results, "measured": MEASURED}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    counts = {s: sum(r["status"] == s for r in results) for s in ("passed", "failed", "skipped")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
