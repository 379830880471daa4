"""`python -m flows [--stages S ...] [--force]`: run the pipeline as a Prefect flow."""

from __future__ import annotations

import argparse
import sys

from flows.pipeline_flow import pipeline_flow


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows", description=__doc__)
    ap.add_argument("--stages", nargs="*", help="stages to run (default: all, in DVC's order)")
    ap.add_argument("--force", action="store_true", help="re-run stages even if DVC has them cached")
    ap.add_argument("--repo", default=".", help="project root (default: .)")
    args = ap.parse_args(argv)
    results = pipeline_flow(stages=args.stages, force=args.force, repo=args.repo)
    for stage, outcome in results.items():
        print(f"{stage}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
