"""Stage 1, download: fetch candidate images into data/raw/ with an index.

`download.source: synthetic` is the built-in offline image search (see
pipeline/synthetic.py). Every file written is decoded once by Pillow before it
is indexed, exactly as a web download would be checked.

Outputs (in data/raw/):
  <id>.<ext>         the image files
  index.csv          id, source, origin, file, sha256, width, height, format
  ground_truth.csv   what the generator planted; for tests only, no stage reads it
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from pipeline import paths, synthetic
from pipeline.images import ImageError, probe, sha256_file, write_bytes_atomic, write_csv_atomic
from pipeline.params import DownloadParams, Params

log = logging.getLogger(__name__)

INDEX_FIELDS = ["id", "source", "origin", "file", "sha256", "width", "height", "format"]
TRUTH_FIELDS = ["id", "kind", "subject", "duplicate_of", "transform"]


def _synthetic(p: DownloadParams, out: Path) -> tuple[list[dict], list[dict]]:
    index, truth = [], []
    for i in tqdm(range(p.count), desc="download (synthetic)", unit="img"):
        item = synthetic.render(p.seed, i)
        path = out / f"{item.id}.{item.ext}"
        write_bytes_atomic(path, item.data)
        try:
            fmt, w, h = probe(path)
        except ImageError as exc:
            log.warning("skipped %s", exc)
            path.unlink(missing_ok=True)
            continue
        index.append(
            {
                "id": item.id,
                "source": "synthetic",
                "origin": f"synthetic://seed-{p.seed}/{i}",
                "file": path.name,
                "sha256": sha256_file(path),
                "width": w,
                "height": h,
                "format": fmt,
            }
        )
        truth.append({k: getattr(item, k) for k in TRUTH_FIELDS})
    return index, truth


def run(params: Params) -> list[dict]:
    """Write the candidate images and index.csv; return the index rows."""
    p = params.download
    out = paths.RAW
    out.mkdir(parents=True, exist_ok=True)
    index, truth = _synthetic(p, out)
    write_csv_atomic(out / "index.csv", INDEX_FIELDS, index)
    write_csv_atomic(out / "ground_truth.csv", TRUTH_FIELDS, truth)
    log.info("download: %d images in %s", len(index), out)
    return index
