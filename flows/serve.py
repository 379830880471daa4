"""`python -m flows serve`: keep a deployment of the flow alive, optionally on a cron schedule."""

from __future__ import annotations

from pathlib import Path

from flows.pipeline_flow import pipeline_flow


def serve(
    name: str = "mario-gan",
    cron: str | None = None,
    repo: str = ".",
    stages: list[str] | None = None,
    force: bool = False,
) -> None:
    """Serve the flow as deployment `mario-gan/NAME` until interrupted; runs execute in this process's machine."""
    parameters: dict = {"repo": str(Path(repo).resolve())}
    if stages:
        parameters["stages"] = stages
    if force:
        parameters["force"] = True
    pipeline_flow.serve(
        name=name,
        cron=cron,
        parameters=parameters,
        description="The DVC pipeline of mario-gan, one task per dvc.yaml stage.",
        tags=["mario-gan"],
    )
