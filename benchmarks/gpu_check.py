"""The GPU check: one command that proves the CUDA path and measures it, in under 8 minutes.

    python benchmarks/gpu_check.py OUT                        # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py OUT --device cpu --tiny    # the same steps, tiny, on CPU

Each step runs in its own process, in this order:

1. the CUDA tests, tests/test_gpu.py, through its own runner (pytest need not
   be installed; without CUDA they are reported as skipped);
2. benchmarks/train_speed.py at 64², 128² and 256², channels 64, batch 64:
   img/s of the pytorch/examples-style reference loop and of ours, peak
   memory, MFU against the GPU's dense bf16 peak (the table entry used is
   named), and ours / reference at 256² (target: 3x or more); and a
   torch.profiler breakdown of our 256² step (where the time goes);
3. the README's 256×256 recipe ("A real Mario run on a GPU") on the
   built-in dataset for a fixed wall-clock budget. The train stage
   (`python -m pipeline train`) is stopped with SIGTERM, as a scheduler
   would; it saves its checkpoint, and a second run resumes it for one more
   step and writes models/generator.pt. Then the sample and evaluate stages
   run: the grids, and SWD against the training set with its real-vs-real
   floor.

OUT receives report.md (the tables), report.json (every figure behind them),
grid.png and grid_raw.png (the sample stage's fixed-seed grids after the
budget), tests.json, speed.json, speed.txt, profile.json, and run/: the project folder the
stages ran in, with their logs.

It needs only torch, torchvision, numpy, Pillow, PyYAML and tqdm: it runs from
this source tree (no `pip install -e .`), with no DVC, Prefect or imagehash.
The built-in dataset is made here by the project's own code: the images of
pipeline/synthetic.py that the git-tracked manifest accepts, squared by the
resize stage. That is the set `dvc repro resize` makes, except that the dedup
stage (which needs imagehash) is not run: an accepted image that dedup groups
as a near-duplicate of another stays in (1 of 295 at present;
tests/test_gpu_check.py checks the rest is pixel-identical). For exactly the
pipeline's set, run `dvc repro resize` where the project is installed and pass
`--processed data/processed`; any other processed folder works the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import curate, paths, synthetic  # noqa: E402
from pipeline.images import write_bytes_atomic, write_csv_atomic  # noqa: E402
from pipeline.params import defaults, params_from_dict  # noqa: E402

RECIPE_HEADING = "### A real Mario run on a GPU"
TARGET_RATIO = 3.0
RESERVE_S = 90  # after the budget: the resuming step, the sample and evaluate stages
TINY = {  # --tiny: the same steps in about a minute on two CPU cores
    "resize": {"size": 32, "workers": 1},
    "train": {
        "resolution": 32,
        "channels": 8,
        "batch_size": 8,
        "log_kimg": 0.016,
        "sample_kimg": 0.04,
        "checkpoint_kimg": 0.04,
        "eval_kimg": 0.04,
        "threads": 1,
    },
    "sample": {"n": 8, "nrow": 4, "interpolation_points": 2, "interpolation_steps": 3},
    "evaluate": {"n": 16, "patches_per_image": 32, "projections": 64},
}
TINY_IMAGES = 16


def readme_recipe(readme: Path = ROOT / "README.md") -> dict[str, Any]:
    """The README's GPU recipe, its `dvc exp run -S section.key=value ...` overrides, as a mapping of
    stage sections."""
    text = readme.read_text(encoding="utf-8")
    section = text.split(RECIPE_HEADING, 1)[1].split("\n#", 1)[0] if RECIPE_HEADING in text else ""
    block = re.search(r"```sh\n(dvc exp run .*?)```", section, re.S)
    if block is None or not re.findall(r"-S (\S+)", block.group(1)):
        raise SystemExit(
            f"error: {readme}: no `dvc exp run -S ...` block under {RECIPE_HEADING!r}; restore the recipe"
        )
    recipe: dict[str, Any] = {}
    for item in re.findall(r"-S (\S+)", block.group(1)):
        key, value = item.split("=", 1)
        name, setting = key.split(".", 1)
        recipe.setdefault(name, {})[setting] = yaml.safe_load(value)
    return recipe


def merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


def env() -> dict[str, str]:
    """Child processes import this source tree, and write progress bars sparingly into the logs."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH", "")]))
    e.setdefault("TQDM_MININTERVAL", "10")
    return e


def run_logged(
    cmd: list[str], log: Path, cwd: Path = ROOT, timeout: float | None = None, extra_env: dict | None = None
) -> tuple[int, str]:
    """Run a command with its output in `log`; return its exit status and output."""
    with open(log, "w", encoding="utf-8") as fh:
        try:
            rc = subprocess.run(
                cmd,
                cwd=cwd,
                env=env() | (extra_env or {}),
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            fh.write(f"\n[gpu_check] timed out after {timeout:.0f} s\n")
    return rc, log.read_text(encoding="utf-8", errors="replace")


def stage(name: str, run_dir: Path, timeout: float | None = None, log: str = "") -> tuple[int, str]:
    """`python -m pipeline <name>` in run_dir, its output in run_dir/<log or name>.log."""
    cmd = [sys.executable, "-m", "pipeline", "--params", "params.yaml", name]
    return run_logged(cmd, run_dir / f"{log or name}.log", cwd=run_dir, timeout=timeout)


def write_params(run_dir: Path, params: dict) -> None:
    params_from_dict(params)  # bad params: one line now, not a traceback minutes later
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def build_dataset(run_dir: Path, params: dict, limit: int | None = None) -> int:
    """run_dir/data/processed from the built-in set: the manifest's accepted synthetic images, squared
    by the resize stage (no dedup: see the module's docstring). Returns the number of images."""
    manifest = curate.read_manifest(ROOT / paths.MANIFEST)
    seed, count = params["download"]["seed"], params["download"]["count"]
    raw = run_dir / paths.RAW
    raw.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        if manifest.decision(synthetic.item_id(i)) != "accept":
            continue
        item = synthetic.render(seed, i)
        write_bytes_atomic(raw / f"{item.id}.{item.ext}", item.data, durable=False)
        rows.append({"id": item.id, "file": f"{item.id}.{item.ext}"})
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise SystemExit(
            f"error: {ROOT / paths.MANIFEST}: accepts none of the built-in images; pass --processed DIR"
        )
    write_csv_atomic(run_dir / paths.CURATED / "accepted.csv", ["id", "file"], rows)
    rc, out = stage("resize", run_dir, timeout=600)
    if rc:
        raise SystemExit(f"error: the resize stage failed (see {run_dir / 'resize.log'}):\n{out[-2000:]}")
    return len(rows)


def train_for(run_dir: Path, seconds: float, batch: int) -> dict[str, Any]:
    """Run the train stage for `seconds` of wall clock, stop it with SIGTERM (it checkpoints), then
    resume it for one step so that it writes models/generator.pt."""
    log = run_dir / "train.log"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        cmd = [sys.executable, "-m", "pipeline", "--params", "params.yaml", "train"]
        proc = subprocess.Popen(cmd, cwd=run_dir, env=env(), stdout=fh, stderr=subprocess.STDOUT)
        started = None  # when the stage logged that its loop starts: its SIGTERM handler is set soon after
        while proc.poll() is None:
            now = time.perf_counter()
            if started is None and re.search(r"train: \d+ images at \d+ px", log.read_text(errors="replace")):
                started = now
            if now - start >= seconds and started is not None and now - started >= 3:
                break
            if now - start >= seconds + 300:
                break  # never started: stop it anyway and report what the log says
            time.sleep(0.5)
        stopped = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=300)  # the checkpoint is written before it exits
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log.read_text(errors="replace")
    stop = re.search(r"SIGTERM at step (\d+) \(([\d.]+) kimg\)", text)
    if stop is None:
        raise SystemExit(
            f"error: the train stage did not stop with a checkpoint (exit {proc.returncode}); see {log}:\n{text[-2000:]}"
        )
    steps, seconds_run = int(stop.group(1)), stopped - start
    result = {
        "budget_s": round(seconds, 1),
        "wall_s": round(seconds_run, 1),
        "steps": steps,
        "kimg": steps * batch / 1000,
        "img_per_sec": steps * batch / seconds_run,
        # From the stage's "N images at R px" line (polled every 0.5 s) to the stop: the training loop
        # with its grids, SWD and checkpoints, without startup and data loading.
        "loop_img_per_sec": steps * batch / (stopped - started) if started else None,
        "stop_exit_code": proc.returncode,
    }

    params = yaml.safe_load((run_dir / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["kimg"] = (steps + 0.5) * batch / 1000  # one more step: resume, then export
    write_params(run_dir, params)
    begin = time.perf_counter()
    rc, text = stage("train", run_dir, timeout=600, log="train_resume")
    resumed = re.search(r"resuming from \S+ at step (\d+)", text)
    if rc or resumed is None or int(resumed.group(1)) != steps:
        raise SystemExit(
            f"error: the train stage did not resume from step {steps} (exit {rc}); see {run_dir / 'train_resume.log'}:\n{text[-2000:]}"
        )
    result["resume_s"] = round(time.perf_counter() - begin, 1)
    return result


def environment(device: torch.device) -> dict[str, Any]:
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = "not installed"
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": tv,
        "device": device.type,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "device_name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    else:
        info["device_name"] = f"cpu ({os.cpu_count()} cores)"
    return info


def markdown(report: dict[str, Any]) -> str:
    e, lines = report["environment"], []
    lines += [
        f"# GPU check: {e['device_name']}",
        "",
        f"Python {e['python']}, torch {e['torch']}, torchvision {e['torchvision']}, {e['date']}; "
        f"`python benchmarks/gpu_check.py {' '.join(report['argv'])}`; total {report['total_s']:.0f} s.",
        "",
    ]
    t = report.get("tests")
    if t:
        counts = {s: sum(r["status"] == s for r in t["tests"]) for s in ("passed", "failed", "skipped")}
        lines += ["## CUDA tests (tests/test_gpu.py)", "", "| test | result | s |", "| --- | --- | --- |"]
        lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.1f} |" for r in t["tests"]]
        lines += ["", ", ".join(f"{v} {k}" for k, v in counts.items()) + "."]
        for k, v in t.get("measured", {}).items():
            lines.append(f"- {k}: {v:.4g}")
        lines.append("")
    s = report.get("speed")
    if s:
        peak = (
            f"MFU against the dense bf16 peak of **{s['peak_entry']}**, {s['peak_bf16_tflops']:.0f} TFLOPS"
            if s.get("peak_entry")
            else "MFU: no bf16 peak known for this device (CUDA only)"
        )
        lines += [
            f"## Training speed (benchmarks/train_speed.py: channels {s['channels']}, batch {s['batch']})",
            "",
            f"{peak}. Model FLOPs per image and step counted with torch's FlopCounterMode.",
            "",
            "| size | loop | img/s | peak MiB | GFLOP/img | MFU |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in s["rows"]:
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
            gf = f"{r['flops_per_img'] / 1e9:.3g}" if r.get("flops_per_img") else "-"
            lines.append(
                f"| {r['size']} | {r['loop']} | {r['img_per_sec']:.1f} | {r['peak_mib']:.0f} | {gf} | {mfu} |"
            )
        last = list(s["ratios"])[-1]
        verdict = "meets" if s["ratio"] >= TARGET_RATIO else "misses"
        lines += [
            "",
            f"Ours / reference at {last}²: **{s['ratio']:.2f}x** ({verdict} the {TARGET_RATIO:.0f}x target).",
            "",
        ]
        prof = s.get("profile")
        if prof and "error" in prof:
            lines += [f"The profile of our {last}² step failed: {prof['error']}.", ""]
        elif prof:
            shares = ", ".join(
                f"{k} {v:.0%}" for k, v in sorted(prof["shares"].items(), key=lambda kv: -kv[1])
            )
            lines += [
                f"Where the time goes, ours at {last}² (torch.profiler, {prof['steps']} steps, "
                f"{prof['ms_per_step']:.1f} ms of {prof['clock']} time a step, by the op that launched it): {shares}.",
                "",
                "| op | share | calls |",
                "| --- | --- | --- |",
            ]
            lines += [f"| `{r['op']}` | {r['share']:.1%} | {r['calls']} |" for r in prof["top"][:10]]
            lines.append("")
    r = report.get("recipe")
    if r:
        ev = r.get("evaluate", {})
        swd, floor = ev.get("swd", {}), ev.get("floor", {})  # metrics/evaluate.json's groups
        tr = r["train"]
        lines += [
            f"## The README's recipe at {r['resolution']}², {tr['budget_s']:.0f} s of wall clock",
            "",
            f"Dataset: {r['dataset']}.",
            "",
            "| img/s, loop | img/s, wall clock | kimg | steps | SWD avg | real-vs-real floor | SWD / floor "
            "| 2,000 kimg would take |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {tr['loop_img_per_sec'] or float('nan'):.1f} | {tr['img_per_sec']:.1f} | {tr['kimg']:.1f} "
            f"| {tr['steps']} | {swd.get('avg', float('nan')):.1f} "
            f"| {floor.get('avg', float('nan')):.1f} | {swd.get('over_floor', float('nan')):.2f} "
            f"| {r['hours_for_2000_kimg']:.1f} h |",
            "",
            "img/s, loop: images shown from the stage's start of training to SIGTERM (cuDNN autotuning, "
            "grids, in-training SWD and checkpoints included); the 2,000 kimg time follows from it. "
            "img/s, wall clock: from process start, with startup and data loading. "
            f"The stop saved the checkpoint and a second run resumed it ({tr['resume_s']:.0f} s with export).",
            "",
            "![fixed-seed grid, EMA generator](grid.png)",
            "",
        ]
    if report.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in report["errors"]] + [""]
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any]) -> None:
    for name, text in (("report.json", json.dumps(report, indent=2) + "\n"), ("report.md", markdown(report))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for report.md, report.json, the grids and logs")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and budget: checks this script's logic")
    ap.add_argument("--minutes", type=float, default=8.0, help="the whole check's limit (default 8)")
    ap.add_argument(
        "--train-seconds", type=float, default=180, help="the recipe's budget, if the limit leaves it"
    )
    ap.add_argument(
        "--processed", type=Path, help="a data/processed folder to train on instead of the built-in set"
    )
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    begin = time.perf_counter()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "error: --device cuda: no CUDA GPU is visible; use --device cpu --tiny to check the script"
        )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "environment": environment(device),
        "errors": [],
    }
    py = sys.executable
    print(
        f"gpu_check: {report['environment']['device_name']}, torch {torch.__version__} -> {out}", flush=True
    )

    if not args.skip_tests:
        print("[1/3] CUDA tests (tests/test_gpu.py)", flush=True)
        rc, text = run_logged(
            [py, str(ROOT / "tests" / "test_gpu.py"), "--json", str(out / "tests.json")],
            out / "tests.log",
            timeout=300,
            # --device cpu: the GPU stays out of every step, so the CUDA tests report skipped
            extra_env={"CUDA_VISIBLE_DEVICES": ""} if device.type == "cpu" else None,
        )
        if (out / "tests.json").exists():
            report["tests"] = json.loads((out / "tests.json").read_text())
        if rc:
            report["errors"].append(f"CUDA tests: exit {rc}; see tests.log")
        print(text.strip().splitlines()[-1] if text.strip() else "(no output)", flush=True)

    if not args.skip_speed:
        print("[2/3] training speed (benchmarks/train_speed.py)", flush=True)
        if args.tiny:
            speed_args = [
                "--sizes",
                "32",
                "--channels",
                "8",
                "--batch",
                "8",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--repeats",
                "1",
                "--threads",
                "1",
            ]
        else:
            speed_args = ["--sizes", "64", "128", "256", "--channels", "64", "--batch", "64", "--steps", "30"]
        cmd = [
            py,
            str(ROOT / "benchmarks" / "train_speed.py"),
            *speed_args,
            "--device",
            device.type,
            "--json",
            str(out / "speed.json"),
            "--profile",
            str(out / "profile.json"),
        ]
        rc, text = run_logged(cmd, out / "speed.txt", timeout=360)
        print(text, end="", flush=True)
        if rc == 0:
            report["speed"] = json.loads((out / "speed.json").read_text())
        else:
            report["errors"].append(f"train_speed.py: exit {rc}; see speed.txt")

    print("[3/3] the README's recipe on the built-in dataset", flush=True)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    params = merge(defaults(), readme_recipe())
    params = merge(params, {"train": {"kimg": 1e6, "device": device.type, "resume": True}})
    if args.tiny:
        params = merge(params, TINY)
    write_params(run_dir, params)
    if args.processed:
        if not (args.processed / "index.csv").is_file():
            raise SystemExit(
                f"error: --processed {args.processed}: no index.csv; give a data/processed folder"
            )
        shutil.copytree(args.processed, run_dir / paths.PROCESSED)
        images = len((run_dir / paths.PROCESSED / "index.csv").read_text().splitlines()) - 1
        dataset = f"{args.processed} ({images} images)"
    else:
        images = build_dataset(run_dir, params, TINY_IMAGES if args.tiny else None)
        dataset = f"built-in: {images} images the manifest accepts, from pipeline/synthetic.py, resize stage"
    t = params["train"]
    elapsed = time.perf_counter() - begin
    budget = 5 if args.tiny else max(30.0, min(args.train_seconds, args.minutes * 60 - elapsed - RESERVE_S))
    print(f"training {t['resolution']}² for {budget:.0f} s on {images} images", flush=True)
    recipe: dict[str, Any] = {
        "resolution": t["resolution"],
        "images": images,
        "dataset": dataset,
        "params": params["train"],
    }
    recipe["train"] = train_for(run_dir, budget, t["batch_size"])
    rate = recipe["train"]["loop_img_per_sec"] or recipe["train"]["img_per_sec"]
    recipe["hours_for_2000_kimg"] = 2e6 / rate / 3600
    for name in ("sample", "evaluate"):
        rc, text = stage(name, run_dir, timeout=300)
        if rc:
            report["errors"].append(f"{name} stage: exit {rc}; see run/{name}.log")
    if (run_dir / paths.EVALUATE_METRICS).exists():
        recipe["evaluate"] = json.loads((run_dir / paths.EVALUATE_METRICS).read_text())
    for grid in ("grid.png", "grid_raw.png"):
        if (run_dir / paths.SAMPLES / grid).exists():
            shutil.copy2(run_dir / paths.SAMPLES / grid, out / grid)
        else:
            report["errors"].append(f"sample stage wrote no {grid}")
    report["recipe"] = recipe
    report["total_s"] = round(time.perf_counter() - begin, 1)
    if not args.tiny and report["total_s"] > args.minutes * 60:
        report["errors"].append(f"took {report['total_s']:.0f} s, over the {args.minutes:g}-minute limit")
    write_report(out, report)
    print(markdown(report))
    failed = [r["name"] for r in report.get("tests", {}).get("tests", []) if r["status"] == "failed"]
    return 1 if report["errors"] or failed else 0


if __name__ == "__main__":
    sys.exit(main())
