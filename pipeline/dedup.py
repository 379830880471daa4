"""Stage 2, dedup: group copies of the same picture and keep the best of each group.

1. Exact copies by sha256 (from data/raw/index.csv): hashed once, grouped together.
2. Candidate pairs: perceptual hashes (`dedup.hash`, `dedup.hash_size`) within
   `dedup.threshold` bits, of the image or of its centre-crop probe, found by
   multi-index hashing (pipeline/dedup_index.py), never by comparing all pairs.
3. Verification: thumbnail correlation >= `dedup.min_score` over small shifts, and a
   foreground colour difference <= `dedup.max_colour_diff`.
4. Images are visited best first (`dedup.keep`); each joins the kept image it is
   verified against, or is kept itself. Members never link through other members.

Features are cached by sha256 in .cache/dedup/ (not a DVC output, so DVC leaves it in
place when it re-runs the stage, and it never goes to a remote): a re-run hashes only new files.

Outputs (in data/dedup/):
  groups.csv      every readable image: its group (the kept id), kept, distance, score, ...
  candidates.csv  the kept images, which curation decides on
  groups.png      a contact sheet of the largest duplicate groups, kept image first
  report.html     every group with thumbnails, sizes and sources; the closest rejected pairs
  report.json     counts, and the files that could not be read (with the reason)
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import multiprocessing
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import paths
from pipeline.dedup_index import (
    Features,
    Grouping,
    candidate_pairs,
    default_workers,
    features,
    group,
    verify_pairs,
    work_side,
)
from pipeline.images import (
    ImageError,
    atomic_open,
    contact_sheet,
    decode,
    load_rgb,
    read_csv,
    save_image_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from pipeline.params import DedupParams, Params
from pipeline.progress import progress

log = logging.getLogger(__name__)

GROUP_FIELDS = ["id", "group", "kept", "distance", "score", "colour_diff", "match", "file"]
CANDIDATE_FIELDS = ["id", "file", "width", "height", "group_size"]
# Bumped whenever features() changes its output. v3: hashes from the box thumbnails.
CACHE_VERSION = "v3"
SHEET_GROUPS = 60  # groups.png shows the largest ones; report.html shows them all
REJECTED_SHOWN = 40


def _hash_one(job: tuple[str, str, bool, str, int]) -> tuple[str, Features | str]:
    sha, path, draft, hash_name, hash_size = job
    # With `draft`, a JPEG is decoded at the power-of-two part of the box reduction
    # features() applies next: the same working size, in less time.
    factor_for = work_side(hash_size) if draft else None
    try:
        return sha, features(decode(path, box_factor_for=factor_for).image, hash_name, hash_size)
    except ImageError as exc:
        return sha, exc.reason


def cache_path(p: DedupParams) -> Path:
    mode = "draft" if p.draft else "full"
    return paths.DEDUP_CACHE / f"{p.hash}-{p.hash_size}-{mode}-{CACHE_VERSION}.npz"


def _drop_stale_caches(current: Path) -> None:
    """Delete cache files of older feature versions: they can never be read again, and at
    a few KiB per image they add up. Other hash settings' files are kept (switching back
    is then free)."""
    for old in current.parent.glob("*-v*.npz"):
        if not old.name.endswith(f"-{CACHE_VERSION}.npz"):
            old.unlink(missing_ok=True)
            log.info("removed stale hash cache %s", old)


def _read_cache(path: Path) -> dict[str, Features | str]:
    try:
        with np.load(path) as z:
            out: dict[str, Features | str] = {
                str(s): Features(np.unpackbits(h)[: z["bits"]].reshape(2, -1).astype(bool), t)
                for s, h, t in zip(z["sha"], z["hashes"], z["thumbs"], strict=True)
            }
            out |= {str(s): str(r) for s, r in zip(z["bad_sha"], z["bad_reason"], strict=True)}
            return out
    except (OSError, ValueError, KeyError) as exc:
        if path.exists():
            log.warning("ignoring unreadable hash cache %s (%s)", path, exc)
        return {}


def _write_cache(path: Path, feats: dict[str, Features | str]) -> None:
    good = sorted(s for s, f in feats.items() if isinstance(f, Features))
    bad = sorted(s for s, f in feats.items() if isinstance(f, str))
    bits = feats[good[0]].hashes.size if good else 0
    with atomic_open(path, "wb") as fh:
        np.savez(
            fh,
            sha=np.array(good, dtype="U64"),
            bits=bits,
            hashes=np.array([np.packbits(feats[s].hashes) for s in good], dtype=np.uint8).reshape(
                len(good), -1
            ),
            thumbs=np.array([feats[s].thumbs for s in good], dtype=np.uint8).reshape(len(good), 2, 32, 32, 3),
            bad_sha=np.array(bad, dtype="U64"),
            bad_reason=np.array([feats[s] for s in bad], dtype=str),
        )


def hash_all(rows: list[dict], raw: Path, p: DedupParams) -> tuple[dict[str, Features | str], int]:
    """Features (or the unreadable reason) for every sha256 in `rows`, from the cache where
    possible; returns them and how many files were hashed now."""
    path = cache_path(p)
    _drop_stale_caches(path)
    cached = _read_cache(path)
    todo: dict[str, str] = {}
    for r in rows:
        if r["sha256"] not in cached:
            todo.setdefault(r["sha256"], str(raw / r["file"]))
    feats = {r["sha256"]: cached[r["sha256"]] for r in rows if r["sha256"] in cached}
    feats |= hash_files(todo, p)
    if todo or len(cached) != len(feats):
        _write_cache(path, feats)  # only what the current images need: same images, same file
    return feats, len(todo)


def hash_files(files: dict[str, str], p: DedupParams) -> dict[str, Features | str]:
    """Features, or the reason a file is unusable, for {sha256: path}; `dedup.workers` processes."""
    jobs = [(sha, f, p.draft, p.hash, p.hash_size) for sha, f in files.items()]
    workers = min(default_workers(p.workers), max(1, len(jobs) // 32))
    feats: dict[str, Features | str] = {}
    with progress(total=len(jobs), desc="dedup (hashing)", unit="img") as bar:
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            with ctx.Pool(workers) as pool:
                for sha, f in pool.imap_unordered(_hash_one, jobs, chunksize=16):
                    feats[sha] = f
                    bar.update()
        else:
            for job in jobs:
                sha, f = _hash_one(job)
                feats[sha] = f
                bar.update()
    return feats


def group_features(hashes: np.ndarray, thumbs: np.ndarray, p: DedupParams) -> tuple[Grouping, int]:
    """Search candidates and group images given best first; returns the grouping and the
    number of candidate pairs."""
    pairs = candidate_pairs(hashes, p.threshold, default_workers(p.workers))
    verifier = partial(verify_pairs, thumbs, workers=default_workers(p.workers), min_score=p.min_score)
    return group(np.arange(len(hashes)), pairs, verifier, p.min_score, p.max_colour_diff), len(pairs[0])


def keep_order(rows: list[dict], raw: Path, keep: str) -> list[int]:
    """Row indices best first. largest: area, then file size, then earliest fetched."""

    def size(i: int) -> int:
        try:
            return (raw / rows[i]["file"]).stat().st_size
        except OSError:
            return 0

    def key(i: int) -> tuple:
        area = int(rows[i]["width"] or 0) * int(rows[i]["height"] or 0)
        return (i,) if keep == "earliest" else (-area, -size(i), i)

    return sorted(range(len(rows)), key=key)


def run(params: Params) -> list[dict]:
    """Hash every downloaded image, group duplicates, write the outputs; return groups.csv rows."""
    p = params.dedup
    raw, out = paths.RAW, paths.DEDUP
    rows = read_csv(raw / "index.csv")
    feats, hashed = hash_all(rows, raw, p)
    unreadable = [
        {"id": r["id"], "file": r["file"], "reason": feats[r["sha256"]]}
        for r in rows
        if isinstance(feats[r["sha256"]], str)
    ]
    for u in unreadable:
        log.warning("skipped %s: %s", u["file"], u["reason"])
    order = [i for i in keep_order(rows, raw, p.keep) if isinstance(feats[rows[i]["sha256"]], Features)]

    # One representative per sha256, the best of its copies: only they are searched.
    rep_of_sha: dict[str, int] = {}
    for i in order:
        rep_of_sha.setdefault(rows[i]["sha256"], i)
    reps = list(rep_of_sha.values())  # already best first
    hashes = np.array([feats[rows[i]["sha256"]].hashes for i in reps]).reshape(len(reps), 2, -1)
    thumbs = np.array([feats[rows[i]["sha256"]].thumbs for i in reps]).reshape(len(reps), 2, 32, 32, 3)
    grouping, n_pairs = group_features(hashes, thumbs, p)

    rep_index = {rows[i]["sha256"]: k for k, i in enumerate(reps)}
    members = []
    for i in order:
        k = rep_index[rows[i]["sha256"]]
        kept_row = rows[reps[grouping.leader[k]]]
        kept = kept_row["id"] == rows[i]["id"]
        exact = reps[k] != i  # grouped as a byte-identical copy of its sha's representative
        same_file = kept_row["sha256"] == rows[i]["sha256"]
        members.append(
            {
                "id": rows[i]["id"],
                "group": kept_row["id"],
                "kept": str(kept).lower(),
                "distance": 0 if same_file else int(grouping.distance[k]),
                "score": f"{1.0 if same_file else grouping.score[k]:.3f}",
                "colour_diff": f"{0.0 if same_file else grouping.colour[k]:.1f}",
                "match": "kept" if kept else "exact" if exact else "near",
                "file": rows[i]["file"],
            }
        )
    members.sort(key=lambda m: m["id"])
    write_csv_atomic(out / "groups.csv", GROUP_FIELDS, members)

    by_id = {r["id"]: r for r in rows}
    groups: dict[str, list[dict]] = {}
    for m in members:
        groups.setdefault(m["group"], []).append(m)
    write_csv_atomic(
        out / "candidates.csv",
        CANDIDATE_FIELDS,
        (
            {
                "id": m["id"],
                "file": m["file"],
                "width": by_id[m["id"]]["width"],
                "height": by_id[m["id"]]["height"],
                "group_size": len(groups[m["id"]]),
            }
            for m in members
            if m["kept"] == "true"
        ),
    )
    multi = sorted(
        (sorted(g, key=lambda m: (m["kept"] != "true", m["id"])) for g in groups.values() if len(g) > 1),
        key=lambda g: (-len(g), g[0]["id"]),
    )
    rejected = sorted(grouping.rejected, key=lambda x: (x[2], -x[3]))[:REJECTED_SHOWN]
    rejected_ids = [(rows[reps[a]]["id"], rows[reps[b]]["id"], d, s, c) for a, b, d, s, c in rejected]
    _groups_sheet(raw, by_id, multi[:SHEET_GROUPS], out / "groups.png")
    write_text_atomic(out / "report.html", _report_html(raw, by_id, multi, rejected_ids, unreadable, p))
    kept_n = sum(m["kept"] == "true" for m in members)
    report = {
        "images": len(rows),
        "unreadable": unreadable,
        "kept": kept_n,
        "duplicates": len(members) - kept_n,
        "groups_with_duplicates": len(multi),
        "hashed": hashed,
        "from_cache": len(feats) - hashed,
        "candidate_pairs": n_pairs,
        "rejected_pairs": len(grouping.rejected),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    log.info(
        "dedup: %d images -> %d kept, %d duplicates, %d unreadable; hashed %d, %d from cache",
        len(rows),
        kept_n,
        report["duplicates"],
        len(unreadable),
        hashed,
        report["from_cache"],
    )
    return members


def _label(m: dict) -> str:
    return f"{m['id']} keep" if m["kept"] == "true" else f"{m['id']} d{m['distance']} {m['score']}"


def _groups_sheet(raw: Path, by_id: dict, multi: list[list[dict]], path: Path) -> None:
    width = max((len(g) for g in multi), default=1)
    items = []
    for g in multi:
        items += [(load_rgb(raw / by_id[m["id"]]["file"]), _label(m)) for m in g]
        items += [(Image.new("RGB", (1, 1), (32, 32, 32)), "")] * (width - len(g))
    save_image_atomic(contact_sheet(items, thumb=96, cols=width), path)


def _thumb_uri(path: Path) -> str:
    try:
        img = load_rgb(path)
    except ImageError:
        return ""
    img.thumbnail((112, 112), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _card(raw: Path, row: dict, caption: str, kept: bool = False) -> str:
    e = html.escape
    cls = "card kept" if kept else "card"
    size = f"{row['width']}×{row['height']}, {_kib(raw / row['file'])} KiB"
    return (
        f'<figure class="{cls}"><img src="{_thumb_uri(raw / row["file"])}" alt="{e(row["id"])}">'
        f"<figcaption><b>{e(row['id'])}</b>{' KEPT' if kept else ''}<br>{e(caption)}<br>{e(size)}"
        f"<br><small>{e(row.get('origin', ''))}</small></figcaption></figure>"
    )


def _kib(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 1024:.0f}"
    except OSError:
        return "?"


def _report_html(
    raw: Path, by_id: dict, multi: list[list[dict]], rejected: list, unreadable: list[dict], p: DedupParams
) -> str:
    """One self-contained page: every group (largest first), then the closest rejected pairs."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>dedup report</title><style>"
        "body{font:14px sans-serif;margin:20px;background:#fafafa}"
        ".row{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 18px}"
        ".card{margin:0;padding:6px;background:#fff;border:2px solid #ccc;width:130px}"
        ".kept{border-color:#2a2}.card img{display:block;margin:auto;max-width:112px;max-height:112px}"
        "figcaption{font-size:11px;word-break:break-all}</style>",
        f"<h1>Duplicate groups ({len(multi)})</h1><p>{e(p.hash)} size {p.hash_size}, candidates within "
        f"{p.threshold} bits; verified when correlation ≥ {p.min_score} and colour difference ≤ "
        f"{p.max_colour_diff}. d = hash distance, r = correlation, c = colour difference, each "
        "against the kept image (green).</p>",
    ]
    for g in multi:
        parts.append(f"<h3>{e(g[0]['group'])}: {len(g)} images</h3><div class='row'>")
        for m in g:
            caption = (
                ""
                if m["kept"] == "true"
                else f"{m['match']} d={m['distance']} r={m['score']} c={m['colour_diff']}"
            )
            parts.append(_card(raw, by_id[m["id"]], caption, m["kept"] == "true"))
        parts.append("</div>")
    parts.append(
        f"<h2>Closest rejected pairs ({len(rejected)})</h2><p>Within the hash threshold but not "
        "verified: if these are copies, loosen min_score or max_colour_diff (c = –: the "
        "correlation failed, so the colour was not measured).</p>"
    )
    for a, b, d, s, c in rejected:
        parts.append("<div class='row'>")
        parts.append(_card(raw, by_id[a], "kept", True))
        # c is only measured for pairs whose correlation passes (NaN otherwise).
        colour = "–" if math.isnan(c) else f"{c:.1f}"
        parts.append(_card(raw, by_id[b], f"d={d} r={s:.3f} c={colour}"))
        parts.append("</div>")
    if unreadable:
        parts.append(f"<h2>Unreadable files ({len(unreadable)})</h2><ul>")
        parts += [f"<li>{e(u['file'])}: {e(u['reason'])}</li>" for u in unreadable]
        parts.append("</ul>")
    return "\n".join(parts) + "\n"
