"""`python -m flows deploy --pool NAME`: a deployment that Prefect workers run.

Unlike `serve` (one long-running process that is both the schedule and the
machine), a deployment on a work pool is only a record on the Prefect server:
any machine that runs `prefect worker start --pool NAME` picks its runs up, each
in a new process. The flow's code and data are the clone at `workdir` on that
machine (Prefect's `set_working_directory` pull step), so every worker machine
needs a clone there with its data pulled (`dvc pull`, README "Sharing").
"""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from flows.pipeline_flow import pipeline_flow

ENTRYPOINT = "flows/pipeline_flow.py:pipeline_flow"


def ensure_process_pool(pool: str) -> str:
    """Create work pool `pool` of type process unless it exists; return its type."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(pool).type
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            return "process"


def deploy(
    pool: str,
    name: str = "mario-gan",
    workdir: str | Path = ".",
    cron: str | None = None,
    stages: list[str] | None = None,
    force: bool = False,
) -> str:
    """Create or update deployment mario-gan/NAME on `pool`; returns its id."""
    root = Path(workdir).resolve()
    if not (root / "dvc.yaml").is_file() or not (root / ENTRYPOINT.split(":")[0]).is_file():
        raise SystemExit(f"error: deploy --workdir {root}: no mario-gan clone there (dvc.yaml, flows/)")
    kind = ensure_process_pool(pool)
    if kind != "process":
        # Docker/Kubernetes pools need an image and remote code storage: the README's next step.
        raise SystemExit(
            f"error: deploy --pool {pool}: a {kind} pool; this command makes process deployments"
        )
    parameters: dict = {"repo": "."}  # the worker's working directory is the clone
    if stages:
        parameters["stages"] = stages
    if force:
        parameters["force"] = True
    flow = pipeline_flow.from_source(source=str(root), entrypoint=ENTRYPOINT)
    return str(
        flow.deploy(
            name=name,
            work_pool_name=pool,
            cron=cron,
            parameters=parameters,
            description="The DVC pipeline of mario-gan, one task per dvc.yaml stage.",
            tags=["mario-gan"],
            print_next_steps=False,
            ignore_warnings=True,
        )
    )
