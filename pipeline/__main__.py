"""`python -m pipeline <stage>` runs one stage with the params in params.yaml.

Stages: download, dedup, curate, resize, train, sample, evaluate. `curate` also takes
status | sync | accept ID... | reject ID... to edit the manifest,
`review` serves a local page for curating with thumbnails and hotkeys,
`sources check [--query Q]` asks each image search engine for one page, and
`export --out DIR` hands over the trained generator (safetensors, config, model card).
Errors a user can fix print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from pipeline import generate, paths
from pipeline.errors import DISK_ERRNOS, PipelineError, disk_error
from pipeline.params import load_params

STAGES = ["download", "dedup", "curate", "resize", "train", "sample", "evaluate"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = ap.add_subparsers(dest="stage", required=True, metavar="stage")
    for name in STAGES:
        sp = sub.add_parser(name, help=f"run the {name} stage")
        if name == "curate":
            sp.add_argument(
                "action",
                nargs="?",
                choices=["run", "status", "sync", "accept", "reject"],
                default="run",
                help="run the stage (default), or edit the manifest",
            )
            sp.add_argument("ids", nargs="*", help="image ids for accept/reject")
            sp.add_argument("--note", help="note to store with accept/reject")
            sp.add_argument(
                "--all-pending", action="store_true", help="accept/reject every pending candidate"
            )
    sc = sub.add_parser("sources", help="check the image search engines (needs internet)")
    sc.add_argument("action", choices=["check"], help="check: ask each engine for one page, print a table")
    sc.add_argument("--query", default="mario", help="what to search for (default: mario)")
    rv = sub.add_parser("review", help="curate on a local web page (127.0.0.1 only)")
    rv.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    rv.add_argument("--no-browser", action="store_true", help="print the URL, don't open a browser")
    generate.add_arguments(sub.add_parser("generate", help="images from models/ without DVC or params.yaml"))
    # export imports torch; it is imported only when run, so `curate accept` and friends start fast.
    ex = sub.add_parser("export", help="hand over the generator: safetensors, config, model card")
    ex.add_argument("--out", type=Path, required=True, help="folder to write the export to")
    ex.add_argument("--model", type=Path, default=paths.MODEL, help="generator file (default: %(default)s)")
    return ap


def _curate(args: argparse.Namespace, params) -> None:
    from pipeline import curate, paths

    if args.action == "run":
        curate.run(params)
    elif args.action == "status":
        print(curate.status(params))
    elif args.action == "sync":
        print(f"added {curate.sync(params)} pending rows to {paths.MANIFEST}")
    else:
        if not args.ids and not args.all_pending:
            raise PipelineError(f"curate {args.action}: name image ids, or pass --all-pending")
        decision = "accept" if args.action == "accept" else "reject"
        changed = curate.decide(params, decision, args.ids, args.note, args.all_pending)
        print(f"{decision}ed {len(changed)} images in {paths.MANIFEST}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.stage == "generate":
            generate.main(args)
            return 0
        if args.stage == "export":
            from pipeline import export

            export.main(args)
            return 0
        params = load_params(args.params)
        if args.stage == "curate":
            _curate(args, params)
        elif args.stage == "sources":
            from pipeline import sources

            rows = sources.check(params.download, args.query)
            print(sources.format_table(rows))
            return 0 if any(r["results"] for r in rows) else 1
        elif args.stage == "review":
            from pipeline import review

            review.serve(args.port, open_browser=not args.no_browser)
        else:
            importlib.import_module(f"pipeline.{args.stage}").run(params)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"error: {disk_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
