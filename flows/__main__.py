"""Run the pipeline as a Prefect flow, or serve it as a deployment.

python -m flows [--stages S ...] [--force] [-S section.key=value ...] [--name EXP]
python -m flows serve [--cron "0 3 * * *"] [--name mario-gan] [--stages S ...]
python -m flows deploy --pool NAME [--name mario-gan] [--workdir DIR] [--cron ...] [--stages S ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.pipeline_flow import pipeline_flow


def run_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m flows", description="Run the dvc.yaml stages as a Prefect flow."
    )
    ap.add_argument("--stages", nargs="*", help="stages to run (default: all, in DVC's order)")
    ap.add_argument("--force", action="store_true", help="re-run stages even if DVC has them cached")
    ap.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a param as `dvc exp run -S` does; the run becomes a DVC experiment",
    )
    ap.add_argument("--name", help="name of that DVC experiment (default: DVC picks one)")
    ap.add_argument(
        "--download-retries", type=int, default=3, help="retries of the download stage (default: 3)"
    )
    ap.add_argument(
        "--retry-delay",
        type=float,
        default=10.0,
        help="first retry delay in s, doubled each time (default: 10)",
    )
    ap.add_argument("--repo", default=".", help="project root (default: .)")
    args = ap.parse_args(argv)
    result = pipeline_flow(
        stages=args.stages,
        force=args.force,
        overrides=args.overrides,
        experiment=args.name,
        download_retries=args.download_retries,
        retry_delay_seconds=args.retry_delay,
        repo=args.repo,
    )
    for stage, outcome in result["stages"].items():
        print(f"{stage}: {outcome}")
    if result["experiment"]:
        print(f"experiment: {result['experiment']}")
    return 0


def serve_main(argv: list[str]) -> int:
    from flows.serve import serve

    ap = argparse.ArgumentParser(
        prog="python -m flows serve",
        description="Serve the flow as a deployment; trigger it with `prefect deployment run mario-gan/NAME`.",
    )
    ap.add_argument("--name", default="mario-gan", help="deployment name (default: mario-gan)")
    ap.add_argument("--cron", help='schedule, e.g. "0 3 * * *" for a re-scrape every night at 03:00')
    ap.add_argument("--stages", nargs="*", help="stages each run runs (default: all)")
    ap.add_argument("--force", action="store_true", help="re-run stages even if DVC has them cached")
    ap.add_argument("--repo", default=".", help="project root (default: .)")
    args = ap.parse_args(argv)
    serve(name=args.name, cron=args.cron, repo=args.repo, stages=args.stages, force=args.force)
    return 0


def deploy_main(argv: list[str]) -> int:
    from flows.deploy import deploy

    ap = argparse.ArgumentParser(
        prog="python -m flows deploy",
        description="Deploy the flow to a process work pool; `prefect worker start --pool NAME` runs it.",
    )
    ap.add_argument("--pool", required=True, help="work pool (created as a process pool if missing)")
    ap.add_argument("--name", default="mario-gan", help="deployment name (default: mario-gan)")
    ap.add_argument(
        "--workdir",
        default=".",
        help="the clone the workers run in, a path on their machines (default: this clone)",
    )
    ap.add_argument("--cron", help='schedule, e.g. "0 3 * * *"')
    ap.add_argument("--stages", nargs="*", help="stages each run runs (default: all)")
    ap.add_argument("--force", action="store_true", help="re-run stages even if DVC has them cached")
    args = ap.parse_args(argv)
    deployment_id = deploy(args.pool, args.name, args.workdir, args.cron, args.stages, args.force)
    print(f"deployment mario-gan/{args.name} ({deployment_id}) on work pool {args.pool}")
    where = Path(args.workdir).resolve()
    print(f"run it: prefect worker start --pool {args.pool}   (on each machine with a clone at {where})")
    print(f"        prefect deployment run mario-gan/{args.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    if argv[:1] == ["deploy"]:
        return deploy_main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
