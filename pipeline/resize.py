"""Stage 4, resize: every accepted image becomes a square RGB PNG for training.

`resize.mode: crop` centre-crops to a square, `pad` letterboxes onto
`resize.background` (which also replaces transparency), `fit` stretches.
Loading (pipeline/images.py) applies EXIF orientation and ICC profiles and
decodes big JPEGs at reduced scale; the final `resize.filter` pass always
starts from at least `resize.reducing_gap` times the output size, which
benchmarks/resize_speed.py checks against a plain full-resolution Lanczos
resize (PSNR >= 40 dB). Images are processed in parallel (`resize.workers`).

Outputs (in data/processed/):
  <id>.png                    resize.size x resize.size RGB
  index.csv                   id, file, upright source size, format and colour mode, mode, size
  skipped.csv                 accepted images that could not be used, with the reason
  ATTRIBUTION.csv             per training image: where it came from and its licence, creator
                              and credit line as the search engine gave them (data/raw/index.csv)
  contact_sheet.png           every training image with its id: look before training
  contact_sheet_<n>.png       further pages when there are more than PAGE images
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from PIL import Image

from pipeline import contracts, paths
from pipeline.images import (
    RGB,
    Box,
    ImageError,
    contact_sheet,
    decode,
    read_csv,
    save_image_atomic,
)
from pipeline.params import Params, ResizeParams, parse_color
from pipeline.progress import progress

log = logging.getLogger(__name__)

FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
THUMB = 96  # contact sheet cell
PAGE = 400  # thumbnails per contact sheet page (20 x 20, about 2000 px square)


def square(
    img: Image.Image,
    size: int,
    mode: str,
    background: RGB,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
    box: Box | None = None,
    reducing_gap: float | None = None,
    source_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Make the `box` region of `img` (default: all of it) size x size: crop, pad or fit.

    The geometry is the same as ImageOps.fit and ImageOps.pad, so a full-size
    image gives their result; `box` (and `source_size` for the exact aspect
    ratio) lets a reduced decode keep it.
    """
    x0, y0, x1, y1 = box or (0.0, 0.0, float(img.width), float(img.height))
    w, h = source_size or (x1 - x0, y1 - y0)
    gap = reducing_gap or None
    if mode == "fit":
        return img.resize((size, size), resample, box=(x0, y0, x1, y1), reducing_gap=gap)
    if mode == "crop":
        bw, bh = x1 - x0, y1 - y0
        side = min(bw, bh)
        cx, cy = x0 + (bw - side) / 2, y0 + (bh - side) / 2
        return img.resize((size, size), resample, box=(cx, cy, cx + side, cy + side), reducing_gap=gap)
    if mode != "pad":
        raise ValueError(f"unknown resize mode {mode!r}")
    inner = (size, max(1, round(h / w * size))) if w >= h else (max(1, round(w / h * size)), size)
    scaled = img.resize(inner, resample, box=(x0, y0, x1, y1), reducing_gap=gap)
    if inner == (size, size):
        return scaled
    out = Image.new("RGB", (size, size), background)
    out.paste(scaled, (round((size - inner[0]) / 2), round((size - inner[1]) / 2)))
    return out


def process(src: str | Path, dst: str | Path, p: ResizeParams) -> tuple[dict, Image.Image]:
    """Load, square and save one image; return its index fields and a contact-sheet thumbnail."""
    background = parse_color(p.background)
    d = decode(src, background, reduce_for=p.size, cover=p.mode != "pad", reducing_gap=p.reducing_gap)
    out = square(d.image, p.size, p.mode, background, FILTERS[p.filter], d.box, p.reducing_gap, d.size)
    # Level 1: twice as fast as the default 6, about 10% larger; these are intermediate files.
    save_image_atomic(out, dst, durable=False, compress_level=1)
    thumb = out.resize((THUMB, THUMB), Image.Resampling.LANCZOS, reducing_gap=2.0)
    row = {
        "source_width": d.size[0],
        "source_height": d.size[1],
        "source_format": d.format,
        "source_mode": d.mode,
        "mode": p.mode,
        "size": p.size,
    }
    return row, thumb


def _job(job: tuple[str, str, str, ResizeParams]) -> tuple[str, dict | str, Image.Image | None]:
    image_id, src, dst, p = job
    try:
        row, thumb = process(src, dst, p)
    except ImageError as exc:
        return image_id, exc.reason, None
    return image_id, row, thumb


def _run_jobs(
    jobs: list[tuple[str, str, str, ResizeParams]], workers: int
) -> Iterator[tuple[str, dict | str, Image.Image | None]]:
    """Yield each job's result as it finishes; one worker runs in this process."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_job, jobs)
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        # One future per image, not chunks: sizes vary 100x, chunks would leave a core idle.
        futures = [pool.submit(_job, j) for j in jobs]
        try:
            for f in as_completed(futures):
                yield f.result()
        except BaseException:
            # A full or read-only disk fails every image the same way: stop at the first.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Pool worker start-up: end with the stage, even when it is killed with kill -9.

    Otherwise the workers of a killed stage live on, orphaned, holding memory.
    On Linux the kernel sends SIGKILL when the parent dies; elsewhere a thread
    polls for the parent.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)


def write_contact_sheets(out: Path, items: list[tuple[Image.Image, str]], title: str) -> list[Path]:
    """contact_sheet.png, then contact_sheet_2.png, ... with PAGE thumbnails each."""
    pages = max(1, math.ceil(len(items) / PAGE))
    written = []
    for n in range(pages):
        sheet = contracts.CONTACT_SHEET
        name = sheet.name if n == 0 else f"{sheet.stem}_{n + 1}{sheet.suffix}"
        chunk = items[n * PAGE : (n + 1) * PAGE]
        page_title = f"{title} - page {n + 1}/{pages}" if pages > 1 else title
        save_image_atomic(contact_sheet(chunk, thumb=THUMB, title=page_title), out / name)
        written.append(out / name)
    return written


def _credit(row: dict) -> dict:
    return {k: row.get(k) or "" for k in contracts.PROCESSED_ATTRIBUTION.fields}


def run(params: Params) -> list[dict]:
    """Resize the accepted images in parallel and write the index, skip list and contact sheets."""
    p = params.resize
    raw, out = paths.RAW, paths.PROCESSED
    accepted = contracts.CURATED_ACCEPTED.read()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(r["id"], str(raw / r["file"]), str(out / f"{r['id']}.png"), p) for r in accepted]
    files = {r["id"]: r["file"] for r in accepted}
    workers = min(p.workers or os.cpu_count() or 1, max(1, len(jobs)))
    rows: list[dict] = []
    skipped: list[dict] = []
    thumbs: dict[str, Image.Image] = {}
    for image_id, result, thumb in progress(
        _run_jobs(jobs, workers), total=len(jobs), desc="resize", unit="img"
    ):
        if isinstance(result, str):
            log.warning("skipped %s (%s): %s", image_id, files[image_id], result)
            skipped.append({"id": image_id, "file": files[image_id], "reason": result})
        else:
            rows.append({"id": image_id, "file": f"{image_id}.png", **result})
            thumbs[image_id] = thumb
    rows.sort(key=lambda r: r["id"])
    skipped.sort(key=lambda r: r["id"])

    # A hand-run stage may leave PNGs of ids no longer accepted: drop them so
    # data/processed holds exactly the training set (plus the sheets).
    keep = {r["file"] for r in rows}
    for f in out.glob("*.png"):
        if f.name not in keep:
            f.unlink()
    contracts.PROCESSED_INDEX.write(rows)
    contracts.PROCESSED_SKIPPED.write(skipped)
    index_csv = contracts.RAW_INDEX.path  # read as text: credits are copied, not checked
    raw_index = {r["id"]: r for r in read_csv(index_csv)} if index_csv.exists() else {}
    credits = [raw_index.get(r["id"], {}) | {"id": r["id"], "file": r["file"]} for r in rows]
    contracts.PROCESSED_ATTRIBUTION.write([_credit(c) for c in credits])
    title = f"{len(rows)} training images, {p.size}x{p.size} {p.mode} {p.filter}"
    sheets = write_contact_sheets(out, [(thumbs[r["id"]], r["id"]) for r in rows], title)
    log.info(
        "resize: %d images at %dx%d (%s), %d skipped, contact sheet in %s",
        len(rows),
        p.size,
        p.size,
        p.mode,
        len(skipped),
        ", ".join(str(s) for s in sheets),
    )
    return rows
