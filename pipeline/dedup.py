"""Stage 2, dedup: group copies of the same picture and keep the best of each group.

Exact copies are found by sha256, near copies by perceptual hash (pHash)
within `dedup.threshold` bits. Images are visited best first (most pixels,
then id), and each joins the first kept image it matches. Every member is
therefore compared with its group's kept image itself, so near-matches never
chain distinct pictures into one group.

Outputs (in data/dedup/):
  groups.csv      every image: its group (the kept id), kept, distance, match
  candidates.csv  the kept images, which curation decides on
  groups.png      a contact sheet of every duplicate group, kept image first
  report.json     counts, and the files that could not be read
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline import paths
from pipeline.images import (
    ImageError,
    contact_sheet,
    load_rgb,
    read_csv,
    save_image_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from pipeline.params import Params

log = logging.getLogger(__name__)

GROUP_FIELDS = ["id", "group", "kept", "distance", "match", "file"]
CANDIDATE_FIELDS = ["id", "file", "width", "height", "group_size"]


@dataclass(frozen=True)
class Entry:
    id: str
    sha256: str
    pixels: int
    hash: imagehash.ImageHash
    thumb: np.ndarray  # 8x8 RGB, for the colour check pHash (luminance only) cannot do


@dataclass(frozen=True)
class Member:
    id: str
    group: str
    distance: int
    match: str  # "kept", "exact" or "phash"


def colour_distance(a: Entry, b: Entry) -> float:
    """Mean absolute difference of the 8x8 colour thumbnails, 0..255.

    Each thumbnail's mean is removed first, so a brightened copy still matches.
    """
    x, y = a.thumb.astype(np.float32), b.thumb.astype(np.float32)
    return float(np.abs((x - x.mean()) - (y - y.mean())).mean())


def thumbnail(img: Image.Image) -> np.ndarray:
    return np.asarray(img.resize((8, 8), Image.Resampling.BOX), dtype=np.uint8)


def group(entries: list[Entry], threshold: int, max_colour_diff: float = 255.0) -> list[Member]:
    """Assign every entry to a group, largest image first; no transitive chaining.

    A pHash match within `threshold` bits must also pass the colour check, since
    pHash sees only luminance: a green plumber and a red one can share a hash.
    """
    order = sorted(entries, key=lambda e: (-e.pixels, e.id))
    kept: list[Entry] = []
    by_sha: dict[str, str] = {}
    out: list[Member] = []
    for e in order:
        if e.sha256 in by_sha:
            out.append(Member(e.id, by_sha[e.sha256], 0, "exact"))
            continue
        best: tuple[int, Entry] | None = None
        for k in kept:
            d = e.hash - k.hash
            if d > threshold or (best is not None and d >= best[0]):
                continue
            if colour_distance(e, k) <= max_colour_diff:
                best = (d, k)
        if best is None:
            kept.append(e)
            by_sha[e.sha256] = e.id
            out.append(Member(e.id, e.id, 0, "kept"))
        else:
            by_sha.setdefault(e.sha256, best[1].id)
            out.append(Member(e.id, best[1].id, best[0], "phash"))
    return out


def run(params: Params) -> list[Member]:
    """Hash every downloaded image, group duplicates and write the outputs."""
    p = params.dedup
    raw, out = paths.RAW, paths.DEDUP
    rows = read_csv(raw / "index.csv")
    entries: list[Entry] = []
    unreadable: list[dict] = []
    for row in tqdm(rows, desc="dedup (hashing)", unit="img"):
        try:
            img = load_rgb(raw / row["file"])
        except ImageError as exc:
            log.warning("skipped %s", exc)
            unreadable.append({"id": row["id"], "file": row["file"], "reason": exc.reason})
            continue
        h = imagehash.phash(img, hash_size=p.hash_size)
        entries.append(Entry(row["id"], row["sha256"], img.width * img.height, h, thumbnail(img)))

    members = group(entries, p.threshold, p.max_colour_diff)
    by_id = {r["id"]: r for r in rows}
    sizes: dict[str, int] = {}
    for m in members:
        sizes[m.group] = sizes.get(m.group, 0) + 1
    members.sort(key=lambda m: m.id)
    write_csv_atomic(
        out / "groups.csv",
        GROUP_FIELDS,
        (
            {
                "id": m.id,
                "group": m.group,
                "kept": str(m.match == "kept").lower(),
                "distance": m.distance,
                "match": m.match,
                "file": by_id[m.id]["file"],
            }
            for m in members
        ),
    )
    kept = [m for m in members if m.match == "kept"]
    write_csv_atomic(
        out / "candidates.csv",
        CANDIDATE_FIELDS,
        (
            {
                "id": m.id,
                "file": by_id[m.id]["file"],
                "width": by_id[m.id]["width"],
                "height": by_id[m.id]["height"],
                "group_size": sizes[m.id],
            }
            for m in kept
        ),
    )
    _groups_sheet(raw, by_id, members, out / "groups.png")
    report = {
        "images": len(rows),
        "unreadable": unreadable,
        "kept": len(kept),
        "duplicates": len(members) - len(kept),
        "groups_with_duplicates": sum(1 for s in sizes.values() if s > 1),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    log.info(
        "dedup: %d images -> %d kept, %d duplicates, %d unreadable",
        len(rows),
        len(kept),
        report["duplicates"],
        len(unreadable),
    )
    return members


def _groups_sheet(raw: Path, by_id: dict, members: list[Member], path: Path) -> None:
    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(m.group, []).append(m)
    multi = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0].group)
    items = []
    width = max((len(g) for g in multi), default=1)
    for g in multi:
        g = sorted(g, key=lambda m: (m.match != "kept", m.id))
        for m in g:
            label = f"{m.id} keep" if m.match == "kept" else f"{m.id} d={m.distance}"
            items.append((load_rgb(raw / by_id[m.id]["file"]), label))
        items.extend((Image.new("RGB", (1, 1), (32, 32, 32)), "") for _ in range(width - len(g)))
    save_image_atomic(contact_sheet(items, thumb=96, cols=width), path)
