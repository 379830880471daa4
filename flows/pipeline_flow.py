"""Run the DVC pipeline as a Prefect flow: one task per dvc.yaml stage.

The stages and their order come from DVC itself (the repository's stage
graph), so dvc.yaml stays the one definition of the DAG. Each task runs
`dvc repro --single-item <stage>`, which gives exactly the caching of
`dvc repro`: a stage whose deps and params are unchanged is skipped, and its
task ends in a Completed state named "Cached".
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, State

CACHED = re.compile(r"Stage '[^']+' (didn't change, skipping|is cached - skipping run)")


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
    env.setdefault("TQDM_MININTERVAL", "5")  # progress lines every 5 s, not every update
    return env


@task(task_run_name="{stage}")
def run_stage(stage: str, repo: str = ".", force: bool = False) -> State:
    """`dvc repro --single-item STAGE`, its output streamed into the run log."""
    logger = get_run_logger()
    cmd = [_dvc(), "repro", "--single-item", stage] + (["--force"] if force else [])
    logger.info("$ %s", " ".join(cmd[1:]))
    proc = subprocess.Popen(
        ["dvc", *cmd[1:]] if cmd[0] == "dvc" else cmd,
        cwd=repo,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    cached = False
    tail: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if not line:
            continue
        logger.info(line)
        cached = cached or bool(CACHED.search(line))
        tail = (tail + [line])[-20:]
    rc = proc.wait()
    if rc != 0:
        errors = [t for t in tail if t.startswith(("ERROR", "error:"))] or tail[-3:]
        raise RuntimeError(f"stage {stage} failed (dvc exit {rc}): {' | '.join(errors)}")
    if cached:
        return Completed(name="Cached", message=f"{stage}: unchanged, DVC skipped it", data="cached")
    return Completed(message=f"{stage}: ran", data="ran")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def publish_artifacts(repo: str | Path = ".") -> None:
    """Counts per stage, final metrics and the sample grid, keyed for history in the UI."""
    root = Path(repo)
    dedup = _read_json(root / "data/dedup/report.json")
    curate = _read_json(root / "data/curated/report.json")
    processed = root / "data/processed/index.csv"
    rows = [
        {"stage": "download", "count": dedup.get("images", ""), "what": "images downloaded"},
        {"stage": "dedup", "count": dedup.get("kept", ""), "what": "kept after removing duplicates"},
        {"stage": "dedup", "count": dedup.get("duplicates", ""), "what": "duplicates dropped"},
        {"stage": "curate", "count": curate.get("accepted", ""), "what": "accepted"},
        {"stage": "curate", "count": curate.get("rejected", ""), "what": "rejected"},
        {"stage": "curate", "count": curate.get("pending", ""), "what": "pending"},
        {
            "stage": "resize",
            "count": max(0, len(processed.read_text().splitlines()) - 1) if processed.exists() else "",
            "what": "training images",
        },
    ]
    create_table_artifact(key="mario-gan-counts", table=rows, description="Images per stage")
    metrics = _read_json(root / "dvclive/metrics.json")
    flat = [{"metric": k, "value": v} for k, v in _flatten(metrics).items()]
    if flat:
        create_table_artifact(key="mario-gan-metrics", table=flat, description="Training metrics")
    grid = root / "samples/grid.png"
    if grid.exists():
        b64 = base64.b64encode(grid.read_bytes()).decode()
        create_markdown_artifact(
            key="mario-gan-samples",
            markdown=f"## Samples\n\n![samples/grid.png](data:image/png;base64,{b64})\n",
            description="samples/grid.png",
        )


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = v
    return out


@flow(name="mario-gan")
def pipeline_flow(stages: list[str] | None = None, force: bool = False, repo: str = ".") -> dict[str, str]:
    """Run the dvc.yaml stages in DAG order (all, or the named ones); returns stage -> ran|cached."""
    logger = get_run_logger()
    order = stage_order(repo)
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]}; dvc.yaml has: {', '.join(order)}")
    selected = [s for s in order if not stages or s in stages]
    logger.info("stages, in DVC's order: %s", " -> ".join(selected))
    results: dict[str, str] = {}
    for stage in selected:
        state = run_stage(stage, repo, force)
        # A task that returns a State hands that State back to the flow.
        results[stage] = "cached" if getattr(state, "name", "") == "Cached" else "ran"
    publish_artifacts(repo)
    logger.info("done: %s", ", ".join(f"{k}: {v}" for k, v in results.items()))
    return results
