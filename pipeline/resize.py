"""Stage 4, resize: every accepted image becomes a square RGB PNG for training.

`resize.mode: crop` centre-crops to a square; `pad` letterboxes onto
`resize.background`, which also replaces transparency. EXIF orientation is
applied when the image is loaded (pipeline/images.py).

Outputs (in data/processed/):
  <id>.png            resize.size x resize.size RGB
  index.csv           id, source size, mode
  contact_sheet.png   every training image with its id: look before training
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

from pipeline import paths
from pipeline.images import ImageError, contact_sheet, load_rgb, read_csv, save_image_atomic, write_csv_atomic
from pipeline.params import Params, ResizeParams, parse_color

log = logging.getLogger(__name__)

INDEX_FIELDS = ["id", "file", "source_width", "source_height", "mode", "size"]


def square(img: Image.Image, size: int, mode: str, background: tuple[int, int, int]) -> Image.Image:
    """Make `img` size x size by centre crop or by padding with `background`."""
    if mode == "crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    return ImageOps.pad(img, (size, size), Image.Resampling.LANCZOS, color=background)


def _one(job: tuple[str, str, str, ResizeParams]) -> dict | str:
    image_id, src, dst_dir, p = job
    try:
        img = load_rgb(src, parse_color(p.background))
    except ImageError as exc:
        return str(exc)
    out = square(img, p.size, p.mode, parse_color(p.background))
    save_image_atomic(out, Path(dst_dir) / f"{image_id}.png")
    return {
        "id": image_id,
        "file": f"{image_id}.png",
        "source_width": img.width,
        "source_height": img.height,
        "mode": p.mode,
        "size": p.size,
    }


def run(params: Params) -> list[dict]:
    """Resize the accepted images in parallel and write the index and contact sheet."""
    p = params.resize
    raw, out = paths.RAW, paths.PROCESSED
    out.mkdir(parents=True, exist_ok=True)
    accepted = read_csv(paths.CURATED / "accepted.csv")
    jobs = [(r["id"], str(raw / r["file"]), str(out), p) for r in accepted]
    workers = p.workers or os.cpu_count() or 1
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_one, jobs, chunksize=8)
        for result in tqdm(results, total=len(jobs), desc="resize", unit="img"):
            if isinstance(result, str):
                log.warning("skipped %s", result)
            else:
                rows.append(result)
    write_csv_atomic(out / "index.csv", INDEX_FIELDS, rows)
    sheet = [(Image.open(out / r["file"]).convert("RGB"), r["id"]) for r in rows]
    save_image_atomic(contact_sheet(sheet, thumb=72), out / "contact_sheet.png")
    log.info("resize: %d images at %dx%d (%s) in %s", len(rows), p.size, p.size, p.mode, out)
    return rows
