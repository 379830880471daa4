"""Run the DVC pipeline as a Prefect flow: one task per dvc.yaml stage.

The stages and their order come from DVC itself (the repository's stage
graph), so dvc.yaml stays the one definition of the DAG. Each task runs
`dvc repro --single-item <stage>`, which gives exactly the caching of
`dvc repro`: a stage whose deps and params are unchanged is skipped, and its
task ends in a Completed state named "Cached".

A run with param overrides (the `-S` syntax of `dvc exp run`) sets them in
params.yaml through DVC, runs the stages one task each, then records the
result with `dvc exp run -S ...`: the stages are already up to date, so DVC
only checks them and commits the experiment. Its name is tagged on the flow
run and published as an artifact.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from pipeline.contracts import (
    CURATED_REPORT,
    DEDUP_REPORT,
    EVALUATE_METRICS,
    PROCESSED_INDEX,
    RAW_INDEX,
    RAW_REJECTED,
    RAW_REPORT,
    SAMPLE_GRID,
    TRAIN_METRICS,
)
from pipeline.progress import parse_line

# The two stages the flow treats specially: the network fetch retries, training reports progress.
DOWNLOAD = "download"
TRAIN = "train"

CACHED = re.compile(r"Stage '[^']+' (didn't change, skipping|is cached - skipping run)")
EXPERIMENT = re.compile(r"Ran experiment\(s\): (\S+)")
GRID_MAX_PX = 1024  # the sample grid is embedded as base64; keep the artifact small


def stage_order(repo: str | Path = ".") -> list[str]:
    """Names of the dvc.yaml stages, upstream first, as DVC's graph orders them."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo)) as r:
        graph = r.index.graph
        # DVC's edges point from a stage to the stages it depends on.
        order = list(reversed(list(nx.lexicographical_topological_sort(graph, key=str))))
        return [s.name for s in order if isinstance(s, PipelineStage)]


def _dvc() -> str:
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Stage commands say `python`: make it this interpreter's environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# DVC's advice after every `dvc repro`: right in a terminal, noise in each task's log.
DVC_HINTS = (
    "To track the changes with git, run:",
    "To enable auto staging, run:",
    "dvc config core.autostage true",
    "Use `dvc push` to send your updates to remote storage.",
)


def is_dvc_hint(line: str) -> bool:
    """True for DVC's git-staging and push advice (the `git add` line names only DVC files)."""
    s = line.strip()
    if s in DVC_HINTS:
        return True
    try:
        words = shlex.split(s)  # DVC quotes paths with spaces
    except ValueError:
        return False
    return (
        words[:2] == ["git", "add"]
        and len(words) > 2
        and all(w.endswith((".lock", ".dvc", ".gitignore")) for w in words[2:])
    )


def _stream(args: list[str], repo: str, on_line: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run `dvc ARGS` in `repo`, handing each output line to `on_line`; return (exit code, last lines)."""
    logger = get_run_logger()
    logger.info("$ dvc %s", " ".join(args))
    # Off a terminal the stages' progress comes as whole lines (pipeline/progress.py).
    proc = subprocess.Popen(
        [_dvc(), *args],
        cwd=repo,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if not line or is_dvc_hint(line):
            continue
        logger.info(line)
        on_line(line)
        tail = (tail + [line])[-20:]
    return proc.wait(), tail


def _dvc_error(what: str, rc: int, tail: list[str]) -> RuntimeError:
    # DVC's own ERROR line plus the stage's one-line `error: ...`, else the last lines it printed.
    errors = [t for t in tail if t.startswith(("ERROR", "error:"))] or tail[-3:]
    return RuntimeError(f"{what} failed (dvc exit {rc}): {' | '.join(errors)}")


class TrainProgress:
    """A progress artifact fed by the stage's progress lines (pipeline/progress.py), made on the first."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.artifact_id = None

    def feed(self, line: str) -> None:
        f = parse_line(line)
        if not f or f["desc"] != self.stage or not f["pct"]:
            return
        extra = [p for p in f["extra"].split(", ") if "=" in p]  # the losses, not the times
        desc = f"{self.stage}: {f['done']}/{f['total']} {f['unit']}" + (
            f", {', '.join(extra)}" if extra else ""
        )
        self.set(float(f["pct"]), desc)

    def set(self, pct: float, description: str) -> None:
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(
                pct, key=f"mario-gan-{self.stage}-progress", description=description
            )
        else:
            update_progress_artifact(self.artifact_id, pct, description=description)


@task(task_run_name="{stage}")
def run_stage(stage: str, repo: str = ".", force: bool = False) -> State:
    """`dvc repro --single-item STAGE`, its output streamed into the run log."""
    progress = TrainProgress(stage) if stage == TRAIN else None
    cached = False

    def on_line(line: str) -> None:
        nonlocal cached
        cached = cached or bool(CACHED.search(line))
        if progress is not None:
            progress.feed(line)

    rc, tail = _stream(["repro", "--single-item", stage] + (["--force"] if force else []), repo, on_line)
    if rc != 0:
        raise _dvc_error(f"stage {stage}", rc, tail)
    if cached:
        return Completed(name="Cached", message=f"{stage}: unchanged, DVC skipped it", data="cached")
    if progress is not None:
        progress.set(100.0, f"{stage}: done")
    return Completed(message=f"{stage}: ran", data="ran")


@task(task_run_name="set params")
def set_params(overrides: list[str], repo: str = ".") -> None:
    """Apply `dvc exp run -S` style overrides to params.yaml, after checking the result loads."""
    from dvc.utils.hydra import apply_overrides

    from pipeline.params import load_params

    target = Path(repo) / "params.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "params.yaml"
        shutil.copy2(target, trial)
        for o in overrides:
            try:
                apply_overrides(str(trial), [o])
            except Exception as exc:
                raise ValueError(
                    f"override {o!r}: DVC rejected it ({exc}); use section.key=value for an existing key"
                ) from None
        load_params(trial)  # a bad value fails here, naming params.yaml: section.key
        shutil.copyfile(trial, target)
    get_run_logger().info("params.yaml: set %s", ", ".join(overrides))


@task(task_run_name="dvc exp run")
def record_experiment(overrides: list[str], stages: list[str], name: str | None, repo: str = ".") -> str:
    """Commit the finished run as a DVC experiment; the stages are up to date, so nothing re-runs."""
    found: list[str] = []
    args = ["exp", "run", *(a for o in overrides for a in ("-S", o))]
    args += (["--name", name] if name else []) + ["--single-item", *stages]
    rc, tail = _stream(args, repo, lambda line: found.extend(EXPERIMENT.findall(line)))
    if rc != 0 or not found:
        raise _dvc_error("dvc exp run", rc, tail)
    return found[-1].rstrip(",")


def _tag_flow_run(tag: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted({*run.tags, tag}))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _csv_rows(path: Path) -> int | None:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except OSError:
        return None


def _size(value: object) -> object:
    return len(value) if isinstance(value, list | dict) else value


def stage_counts(repo: str | Path = ".") -> list[dict]:
    """Images per stage, from the reports the stages wrote; a missing report leaves its rows out."""
    root = Path(repo)
    raw = _read_json(root / RAW_REPORT)
    dedup = _read_json(root / DEDUP_REPORT)
    curate = _read_json(root / CURATED_REPORT)
    downloaded = _csv_rows(root / RAW_INDEX.path)
    rejected = raw.get("rejected", _csv_rows(root / RAW_REJECTED.path))
    rows = [
        ("download", "downloaded", downloaded),
        ("download", "rejected by the downloader", _size(rejected)),
        ("dedup", "kept (one per group)", dedup.get("kept")),
        ("dedup", "duplicates dropped", dedup.get("duplicates")),
        ("dedup", "duplicate groups", dedup.get("groups_with_duplicates")),
        ("dedup", "unreadable", _size(dedup.get("unreadable"))),
        ("curate", "accepted", curate.get("accepted")),
        ("curate", "rejected", curate.get("rejected")),
        ("curate", "pending", curate.get("pending")),
        ("resize", "processed", _csv_rows(root / PROCESSED_INDEX.path)),
    ]
    return [{"stage": s, "what": w, "count": c} for s, w, c in rows if c is not None]


def metrics_rows(repo: str | Path = ".") -> list[dict]:
    """Every metrics file dvc.yaml declares (DVCLive's, evaluate's), one row per value."""
    try:
        from dvc.repo import Repo

        with Repo(str(repo)) as r:
            files = r.metrics.show().get("", {}).get("data", {})
        found = {path: entry.get("data", {}) for path, entry in files.items()}
    except Exception:  # DVC could not read them: fall back to the known files
        found = {p: _read_json(Path(repo) / p) for p in (str(TRAIN_METRICS), str(EVALUATE_METRICS))}
    return [
        {"file": path, "metric": k, "value": round(v, 6) if isinstance(v, float) else v}
        for path, data in sorted(found.items())
        for k, v in _flatten(data).items()
    ]


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _grid_png(path: Path) -> bytes:
    """The grid as PNG bytes, shrunk to GRID_MAX_PX wide so the artifact stays small."""
    from PIL import Image

    with Image.open(path) as img:
        if img.width <= GRID_MAX_PX:
            return path.read_bytes()
        small = img.resize(
            (GRID_MAX_PX, round(img.height * GRID_MAX_PX / img.width)), Image.Resampling.LANCZOS
        )
        buf = io.BytesIO()
        small.save(buf, format="PNG")
        return buf.getvalue()


def publish_artifacts(repo: str | Path = ".", outcome: dict[str, str] | None = None) -> None:
    """Counts per stage, final metrics and the sample grid, keyed for history in the UI."""
    root = Path(repo)
    counts = stage_counts(root)
    if outcome:
        counts = [r | {"this run": outcome.get(r["stage"], "not run")} for r in counts]
    if counts:
        create_table_artifact(key="mario-gan-counts", table=counts, description="Images per stage")
    metrics = metrics_rows(root)
    if metrics:
        create_table_artifact(key="mario-gan-metrics", table=metrics, description="Final metrics")
    grid = root / SAMPLE_GRID
    if grid.exists():
        b64 = base64.b64encode(_grid_png(grid)).decode()
        create_markdown_artifact(
            key="mario-gan-samples",
            markdown=f"## Samples\n\n![{SAMPLE_GRID}](data:image/png;base64,{b64})\n",
            description=str(SAMPLE_GRID),
        )


@flow(name="mario-gan")
def pipeline_flow(
    stages: list[str] | None = None,
    force: bool = False,
    overrides: list[str] | None = None,
    experiment: str | None = None,
    download_retries: int = 3,
    retry_delay_seconds: float = 10.0,
    repo: str = ".",
) -> dict:
    """Run the dvc.yaml stages in DAG order (all, or the named ones).

    overrides: params to set, as in `dvc exp run -S` (e.g. "train.lr=0.0001"); the run becomes
    a DVC experiment, named `experiment` or by DVC. The download stage retries `download_retries`
    times, waiting retry_delay_seconds, then twice that, and so on. Returns
    {"stages": {stage: "ran" | "cached"}, "experiment": name or None}.
    """
    logger = get_run_logger()
    order = stage_order(repo)
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]}; dvc.yaml has: {', '.join(order)}")
    selected = [s for s in order if not stages or s in stages]
    logger.info("stages, in DVC's order: %s", " -> ".join(selected))
    if overrides:
        set_params(overrides, repo)
    delays = (
        exponential_backoff(backoff_factor=retry_delay_seconds)(download_retries) if download_retries else 0
    )
    results: dict[str, str] = {}
    for stage in selected:
        runner = run_stage
        if stage == DOWNLOAD:
            runner = run_stage.with_options(retries=download_retries, retry_delay_seconds=delays)
        state = runner(stage, repo, force)
        # A task that returns a State hands that State back to the flow.
        results[stage] = "cached" if getattr(state, "name", "") == "Cached" else "ran"
    name = None
    if overrides:
        name = record_experiment(overrides, selected, experiment, repo)
        _tag_flow_run(f"exp:{name}")
        create_markdown_artifact(
            key="mario-gan-experiment",
            markdown=f"DVC experiment **{name}**\n\n"
            + "".join(f"- `{o}`\n" for o in overrides)
            + f"\nCompare: `dvc exp show`, `dvc plots diff {name}`\n",
            description=f"experiment {name}",
        )
        logger.info("recorded as DVC experiment %s", name)
    publish_artifacts(repo, results)
    logger.info("done: %s", ", ".join(f"{k}: {v}" for k, v in results.items()))
    return {"stages": results, "experiment": name}
