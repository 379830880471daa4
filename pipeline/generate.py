"""`python -m pipeline generate`: images from models/generator.pt, without DVC or params.yaml.

    python -m pipeline generate --n 16 --seed 3 --out DIR [--truncation 1.5]

writes DIR/000.png ... and DIR/grid.png. The same model, seed and truncation
give the same images. Truncation redraws latent components beyond ±t: lower
t trades variety for typical-looking images.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import paths
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    ap.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs and grid.png")
    ap.add_argument("--truncation", type=float, help="redraw latent components beyond ±T (e.g. 1.5)")
    ap.add_argument("--model", type=Path, default=paths.MODEL, help="generator file")
    ap.add_argument("--which", choices=["ema", "raw"], default="ema", help="EMA (default) or raw weights")
    ap.add_argument("--nrow", type=int, default=8, help="grid columns (default 8)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def main(args: argparse.Namespace) -> list[Path]:
    """Write the images; returns their paths, grid last."""
    if args.n < 1:
        raise PipelineError(f"generate --n: must be at least 1, got {args.n}")
    if args.nrow < 1:
        raise PipelineError(f"generate --nrow: must be at least 1, got {args.nrow}")
    if args.truncation is not None and not args.truncation > 0:
        raise PipelineError(f"generate --truncation: must be above 0 (try 1.5), got {args.truncation}")

    from pipeline.sample import generate
    from pipeline.tensors import save_grid

    images = generate(args.model, args.n, args.seed, args.device, args.which, args.truncation)
    written = []
    for i, x in enumerate(images):
        path = args.out / f"{i:03d}.png"
        save_grid(x[None], path)
        written.append(path)
    grid = args.out / "grid.png"
    save_grid(images, grid, nrow=args.nrow)
    written.append(grid)
    print(f"wrote {args.n} images and {grid}")
    return written
