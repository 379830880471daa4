"""Stage 2, dedup: group copies of the same picture and keep the best of each group.

1. Exact copies by sha256 (from data/raw/index.csv): hashed once, grouped together.
2. Candidate pairs: perceptual hashes (`dedup.hash`, `dedup.hash_size`) within
   `dedup.threshold` bits, of the image or of its centre-crop probe, and pairs whose
   average hashes are close and whose main hashes are a little further apart; found by
   multi-index hashing (pipeline/dedup_index.py), never by comparing all pairs. Pairs
   whose aspect ratios no allowed crop explains are left out.
3. Verification: thumbnail correlation >= `dedup.min_score` over small shifts, and a
   foreground colour difference <= `dedup.max_colour_diff` (stricter for the pairs only
   the average hash found).
4. Images are visited best first (`dedup.keep`); each joins the kept image it is
   verified against, or is kept itself. Members never link through other members.

The algorithm and the reasons for its choices are explained once, in the README's
"Deduplication" section; pipeline/dedup_index.py implements it without file I/O.

Features are cached by sha256 in .cache/dedup/ (not a DVC output, so DVC leaves it in
place when it re-runs the stage, and it never goes to a remote): a re-run hashes only new files.
While hashing, every FLUSH_EVERY new features are saved as a part file, so a killed
run resumes where it stopped; the parts are merged into one file at the end.

Outputs (in data/dedup/):
  groups.csv      every readable image: its group (the kept id), kept, distance, score, ...
  candidates.csv  the kept images, which curation decides on
  groups.png      a contact sheet of the largest duplicate groups, kept image first
  report.html     every group with thumbnails, sizes and sources; the closest rejected pairs
                  (both drawn by pipeline/dedup_report.py)
  report.json     counts, and the files that could not be read (with the reason)
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import zipfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from pipeline import dedup_report, paths
from pipeline.contracts import (
    DEDUP_CANDIDATES,
    DEDUP_GROUPS,
    DEDUP_REPORT,
    DEDUP_REPORT_HTML,
    DEDUP_SHEET,
    RAW_INDEX,
)
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
from pipeline.images import ImageError, atomic_open, decode, write_text_atomic
from pipeline.params import DedupParams, Params
from pipeline.progress import progress

log = logging.getLogger(__name__)

# Bumped whenever features() changes its output. v3: hashes from the box thumbnails;
# v4: the aspect ratio; v5: the average hash (second candidate source).
CACHE_VERSION = "v5"
# A cache file, or a part saved while hashing: "<hash>-<size>-<mode>-<version>[.partNNNNN].npz".
_CACHE_NAME = re.compile(r"-(v\d+)(?:\.part\d+)?\.npz$")
FLUSH_EVERY = 512  # features saved as a part file every this many images: a kill loses fewer
REJECTED_SHOWN = 40
Feats = dict[str, Features | str]  # sha256 -> features, or the reason the file is unusable


# --- 1. hash ----------------------------------------------------------------------------


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


def _part_paths(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.part*.npz"))


def _drop_stale_caches(current: Path) -> None:
    """Delete cache files (and parts) of older feature versions: they can never be read
    again, and at a few KiB per image they add up. Other hash settings' files are kept
    (switching back is then free)."""
    for old in current.parent.glob("*.npz"):
        version = _CACHE_NAME.search(old.name)
        if version and version.group(1) != CACHE_VERSION:
            old.unlink(missing_ok=True)
            log.info("removed stale hash cache %s", old)


def _read_cache(path: Path) -> Feats:
    """The features in one cache file; {} if it is missing. A corrupt or truncated file
    (a disk filled up, a copy cut short) is deleted with a warning: its images are hashed
    again and the file is written anew."""
    if not path.exists():
        return {}
    try:
        with np.load(path) as z:
            out: Feats = {
                str(s): Features(
                    np.unpackbits(h)[: z["bits"]].reshape(2, -1).astype(bool),
                    t,
                    float(r),
                    np.unpackbits(a) > 0,
                )
                for s, h, t, r, a in zip(
                    z["sha"], z["hashes"], z["thumbs"], z["aspect"], z["second"], strict=True
                )
            }
            out |= {str(s): str(r) for s, r in zip(z["bad_sha"], z["bad_reason"], strict=True)}
            return out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        log.warning("discarding unreadable hash cache %s (%s): its images are hashed again", path, exc)
        path.unlink(missing_ok=True)
        return {}


def _write_cache(path: Path, feats: Feats) -> None:
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
            aspect=np.array([feats[s].aspect for s in good], dtype=np.float64),
            second=np.array([np.packbits(feats[s].second) for s in good], dtype=np.uint8).reshape(
                len(good), 8
            ),
            bad_sha=np.array(bad, dtype="U64"),
            bad_reason=np.array([feats[s] for s in bad], dtype=str),
        )


def hash_all(rows: list[dict], raw: Path, p: DedupParams) -> tuple[Feats, int]:
    """Features (or the unreadable reason) for every sha256 in `rows`, from the cache where
    possible (and from the parts a killed run saved); returns them and how many files were
    hashed now."""
    path = cache_path(p)
    _drop_stale_caches(path)
    cached = _read_cache(path)
    parts = _part_paths(path)
    for part in parts:
        cached |= _read_cache(part)
    todo: dict[str, str] = {}
    for r in rows:
        if r["sha256"] not in cached:
            todo.setdefault(r["sha256"], str(raw / r["file"]))
    feats = {r["sha256"]: cached[r["sha256"]] for r in rows if r["sha256"] in cached}
    numbers = iter(range(len(parts), 1 << 30))

    def save_part(batch: Feats) -> None:
        _write_cache(path.with_name(f"{path.stem}.part{next(numbers):05d}.npz"), batch)

    feats |= hash_files(todo, p, save_part)
    if todo or parts or len(cached) != len(feats):
        _write_cache(path, feats)  # only what the current images need: same images, same file
        for part in _part_paths(path):
            part.unlink(missing_ok=True)
    return feats, len(todo)


def hash_files(files: dict[str, str], p: DedupParams, save: Callable[[Feats], None] | None = None) -> Feats:
    """Features, or the reason a file is unusable, for {sha256: path}; `dedup.workers`
    processes. `save` gets every FLUSH_EVERY new results (and the rest when stopped)."""
    jobs = [(sha, f, p.draft, p.hash, p.hash_size) for sha, f in files.items()]
    workers = min(default_workers(p.workers), max(1, len(jobs) // 32))
    feats: Feats = {}
    batch: Feats = {}

    def add(sha: str, f: Features | str) -> None:
        feats[sha] = batch[sha] = f
        if save is not None and len(batch) >= FLUSH_EVERY:
            save(dict(batch))
            batch.clear()

    try:
        with progress(total=len(jobs), desc="dedup (hashing)", unit="img") as bar:
            if workers > 1:
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
                with ctx.Pool(workers) as pool:
                    for sha, f in pool.imap_unordered(_hash_one, jobs, chunksize=16):
                        add(sha, f)
                        bar.update()
            else:
                for job in jobs:
                    add(*_hash_one(job))
                    bar.update()
    finally:
        # Also when interrupted (Ctrl-C, SIGTERM via the flow): keep what was hashed.
        if save is not None and batch:
            save(batch)
    return feats


# --- 2. group ---------------------------------------------------------------------------


def group_features(
    hashes: np.ndarray, thumbs: np.ndarray, aspect: np.ndarray, second: np.ndarray, p: DedupParams
) -> tuple[Grouping, int]:
    """Search candidates and group images given best first; returns the grouping and the
    number of candidate pairs."""
    pairs = candidate_pairs(hashes, p.threshold, default_workers(p.workers), aspect, second)
    verifier = partial(
        verify_pairs,
        thumbs,
        workers=default_workers(p.workers),
        min_score=p.min_score,
        max_colour=p.max_colour_diff,
    )
    g = group(np.arange(len(hashes)), pairs, verifier, p.min_score, p.max_colour_diff, p.threshold)
    return g, len(pairs[0])


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


def group_rows(
    rows: list[dict], feats: Feats, order: list[int], p: DedupParams
) -> tuple[list[int], Grouping, int]:
    """Group the readable rows (`order`: best first). Only one representative per sha256,
    the best of its copies, is searched; returns the representatives' row indices, their
    grouping (indexed like them) and the number of candidate pairs."""
    rep_of_sha: dict[str, int] = {}
    for i in order:
        rep_of_sha.setdefault(rows[i]["sha256"], i)
    reps = list(rep_of_sha.values())  # already best first
    hashes = np.array([feats[rows[i]["sha256"]].hashes for i in reps]).reshape(len(reps), 2, -1)
    thumbs = np.array([feats[rows[i]["sha256"]].thumbs for i in reps]).reshape(len(reps), 2, 32, 32, 3)
    aspect = np.array([feats[rows[i]["sha256"]].aspect for i in reps], dtype=np.float64)
    second = np.array([feats[rows[i]["sha256"]].second for i in reps]).reshape(len(reps), 64)
    grouping, n_pairs = group_features(hashes, thumbs, aspect, second, p)
    return reps, grouping, n_pairs


# --- 3. rows ----------------------------------------------------------------------------


def member_rows(rows: list[dict], order: list[int], reps: list[int], grouping: Grouping) -> list[dict]:
    """groups.csv rows, by id: byte-identical copies join their sha256's representative."""
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
                "kept": kept,
                "distance": 0 if same_file else int(grouping.distance[k]),
                "score": 1.0 if same_file else round(float(grouping.score[k]), 3),
                "colour_diff": 0.0 if same_file else round(float(grouping.colour[k]), 1),
                "match": "kept" if kept else "exact" if exact else "near",
                "file": rows[i]["file"],
            }
        )
    return sorted(members, key=lambda m: m["id"])


# --- 4. write ---------------------------------------------------------------------------


def write_outputs(
    rows: list[dict],
    members: list[dict],
    rejected: list[dedup_report.Rejected],
    unreadable: list[dict],
    counts: dict,
    p: DedupParams,
) -> dict:
    """groups.csv, candidates.csv, groups.png, report.html and report.json; returns the report."""
    raw = paths.RAW
    DEDUP_GROUPS.write(members)
    by_id = {r["id"]: r for r in rows}
    groups: dict[str, list[dict]] = {}
    for m in members:
        groups.setdefault(m["group"], []).append(m)
    DEDUP_CANDIDATES.write(
        {
            "id": m["id"],
            "file": m["file"],
            "width": by_id[m["id"]]["width"],
            "height": by_id[m["id"]]["height"],
            "group_size": len(groups[m["id"]]),
        }
        for m in members
        if m["kept"]
    )
    multi = sorted(
        (sorted(g, key=lambda m: (not m["kept"], m["id"])) for g in groups.values() if len(g) > 1),
        key=lambda g: (-len(g), g[0]["id"]),
    )
    dedup_report.groups_sheet(raw, by_id, multi, DEDUP_SHEET)
    write_text_atomic(DEDUP_REPORT_HTML, dedup_report.report_html(raw, by_id, multi, rejected, unreadable, p))
    kept_n = sum(m["kept"] for m in members)
    report = {
        "images": len(rows),
        "unreadable": unreadable,
        "kept": kept_n,
        "duplicates": len(members) - kept_n,
        "groups_with_duplicates": len(multi),
        **counts,
    }
    write_text_atomic(DEDUP_REPORT, json.dumps(report, indent=2) + "\n")
    return report


def run(params: Params) -> list[dict]:
    """Hash every downloaded image, group duplicates, write the outputs; return groups.csv rows."""
    p = params.dedup
    rows = RAW_INDEX.read()
    feats, hashed = hash_all(rows, paths.RAW, p)
    unreadable = [
        {"id": r["id"], "file": r["file"], "reason": feats[r["sha256"]]}
        for r in rows
        if isinstance(feats[r["sha256"]], str)
    ]
    for u in unreadable:
        log.warning("skipped %s: %s", u["file"], u["reason"])
    order = [i for i in keep_order(rows, paths.RAW, p.keep) if isinstance(feats[rows[i]["sha256"]], Features)]
    reps, grouping, n_pairs = group_rows(rows, feats, order, p)
    members = member_rows(rows, order, reps, grouping)
    closest = sorted(grouping.rejected, key=lambda x: (x[2], -x[3]))[:REJECTED_SHOWN]
    rejected = [(rows[reps[a]]["id"], rows[reps[b]]["id"], d, s, c) for a, b, d, s, c in closest]
    counts = {
        "hashed": hashed,
        "from_cache": len(feats) - hashed,
        "candidate_pairs": n_pairs,
        "rejected_pairs": len(grouping.rejected),
    }
    report = write_outputs(rows, members, rejected, unreadable, counts, p)
    log.info(
        "dedup: %d images -> %d kept, %d duplicates, %d unreadable; hashed %d, %d from cache",
        len(rows),
        report["kept"],
        report["duplicates"],
        len(unreadable),
        hashed,
        report["from_cache"],
    )
    return members
