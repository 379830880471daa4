"""Stage 1, download: fetch candidate images into data/raw/ with a provenance index.

`download.source` picks where images come from, one or a list of the web ones:
  synthetic  the built-in offline image search (pipeline/synthetic.py)
  google     google-images-download in headless Chrome finds URLs, per query
  bing       Bing's image results pages (pipeline/bing.py), per query
  ddg        DuckDuckGo through the ddgs package (pipeline/ddg.py), per query
  openverse  the Openverse API, with licences (pipeline/openverse.py), per query
  urls       a text or CSV file of image URLs (download.urls_file)
  folder     image files under a local directory (download.folder)

An engine that is blocked or rate limited is reported in one line and left
out; the others go on. `download.licenses` keeps only results with one of
those licences (only openverse reports licences).

URLs are fetched by pipeline/fetch.py into a cache outside the DVC output
(.cache/download, git-ignored), which survives DVC deleting data/raw before a run: a
re-run re-uses what was fetched and only downloads new URLs. Every file is
decoded once by Pillow before it is indexed.

Outputs (in data/raw/):
  <id>.<ext>         the images; syn-NNNNN for synthetic, img-<sha256 prefix> otherwise
  index.csv          one row per image: id, source, query, origin (image URL or path),
                     page_url, file, sha256, bytes, width, height, format, fetched_at,
                     title, license, license_version, license_url, creator, attribution
                     (the last six as the engine gave them; empty when it gives none)
  urls.csv           every URL that gave an image (two URLs, same bytes: two rows, one id)
  rejected.csv       every URL or file refused, with the reason
  report.json        counts per query and per rejection reason
  ground_truth.csv   synthetic only: what the generator planted; for tests only
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import contracts, paths, sources, synthetic
from pipeline.errors import DISK_ERRNOS, PipelineError
from pipeline.fetch import (
    Fetcher,
    Outcome,
    Rejected,
    Task,
    clean_temp,
    now,
    read_log,
    shown,
    store_image,
    unique,
)
from pipeline.images import (
    ImageError,
    probe,
    sha256_file,
    write_bytes_atomic,
    write_text_atomic,
)
from pipeline.params import DownloadParams, Params
from pipeline.progress import progress
from pipeline.search import EngineError, keep_licensed

log = logging.getLogger(__name__)

# Outside data/raw on purpose: DVC deletes a stage's outputs before running it.
CACHE = paths.DOWNLOAD_CACHE

# What the engine said about an image (only openverse knows licences); empty otherwise.
META_FIELDS = contracts.LICENCE_COLUMNS
TRUTH_FIELDS = contracts.RAW_TRUTH.columns


def _synthetic(p: DownloadParams, out: Path) -> tuple[list[dict], list[dict]]:
    index, truth = [], []
    for i in progress(range(p.count), desc="download (synthetic)", unit="img"):
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
                "query": "",
                "origin": f"synthetic://seed-{p.seed}/{i}",
                "page_url": "",
                "file": path.name,
                "sha256": sha256_file(path),
                "bytes": len(item.data),
                "width": w,
                "height": h,
                "format": fmt,
                "fetched_at": "",
                **dict.fromkeys(META_FIELDS, ""),
            }
        )
        truth.append({k: getattr(item, k) for k in TRUTH_FIELDS})
    return index, truth


def _discover(p: DownloadParams, outcome: dict[str, str]) -> Iterator[tuple[str, list[Task]]]:
    """(label, tasks) per progress bar: one per engine and query, or one for the urls file.

    Search engines are asked lazily, query by query, so that a failure in a
    later query keeps what earlier ones fetched. An engine that fails is
    recorded in `outcome` and not asked again in this run.
    """
    for source in p.sources:
        if source == "urls":
            yield Path(p.urls_file).name, sources.urls(p)
            outcome[source] = "ok"
            continue
        found = 0
        for q in p.queries:
            try:
                hits = sources.find(source, q, p)
            except EngineError as exc:
                log.warning("%s", exc)
                outcome[source] = str(exc)
                break
            found += len(hits)
            yield f"{source}: {q}", hits
        else:
            queries = ", ".join(repr(q) for q in p.queries)
            outcome[source] = "ok" if found else f"{source}: 0 results for every query ({queries})"


def _licensed(p: DownloadParams, label: str, tasks: list[Task]) -> list[Task]:
    kept, dropped = keep_licensed(tasks, p.licenses)
    if dropped:
        log.info(
            "%s: %d of %d results left out: licence not in download.licenses %s",
            label,
            dropped,
            len(tasks),
            p.licenses,
        )
    return kept


def _web(p: DownloadParams, out: Path) -> tuple[list[tuple[Task, Outcome]], dict[str, str]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / ".gitignore").exists():
        write_text_atomic(CACHE / ".gitignore", "# mario-gan's download cache: never commit it\n*\n")
    stale = clean_temp(CACHE)
    if stale:
        log.info("removed %d partial files left by an interrupted run", stale)
    done = read_log(CACHE)
    fetcher = Fetcher.from_params(CACHE, p)
    results: list[tuple[Task, Outcome]] = []
    seen: set[str] = set()
    outcome: dict[str, str] = {}
    listed = 0
    for label, found in _discover(p, outcome):
        listed += len(found)
        # The same URL from another page, query or engine is fetched once, for the first.
        tasks = [t for t in unique(_licensed(p, label, found)) if t.url not in seen]
        seen.update(t.url for t in tasks)
        todo = [t for t in tasks if t.url not in done]
        fetched = {o.url: o for o in fetcher.fetch_many(todo, desc=label)}
        got = [(t, fetched.get(t.url) or done[t.url]) for t in tasks]
        ok = sum(o.ok for _, o in got)
        log.info(
            "%s: %d URLs (%d known from earlier runs): %d images, %d rejected",
            label,
            len(tasks),
            len(tasks) - len(todo),
            ok,
            len(got) - ok,
        )
        results += got
    if not seen:
        if listed:
            raise PipelineError(
                f"download: none of the {listed} results has a licence in download.licenses "
                f"{p.licenses} (only openverse reports licences); widen the list, or set it to []"
            )
        raise PipelineError("download: " + "; ".join(outcome.values()))
    for _, o in results:
        if o.ok and not (out / o.file).exists():
            write_bytes_atomic(out / o.file, (CACHE / o.file).read_bytes())
    return results, outcome


def _import(path: Path, p: DownloadParams, out: Path) -> Outcome:
    try:
        size = path.stat().st_size
        if size > p.max_bytes:
            raise Rejected(f"too large: {size} bytes (download.max_bytes is {p.max_bytes})")
        data = path.read_bytes()
        name, sha, fmt, w, h = store_image(data, out, p.min_side)
    except Rejected as exc:
        return Outcome(str(path), False, str(exc), fetched_at=now())
    except OSError as exc:
        if exc.errno in DISK_ERRNOS and exc.filename != str(path):
            raise  # writing into data/raw failed (read-only, full): the whole run stops with one line
        return Outcome(str(path), False, f"cannot read: {exc.strerror or exc}", fetched_at=now())
    return Outcome(str(path), True, "", False, name, sha, len(data), w, h, fmt, "", now())


def _folder(p: DownloadParams, out: Path) -> list[tuple[Task, Outcome]]:
    files = sources.folder(p)
    tasks = [Task(sources.printable(f), "", "", "folder") for f in files]
    with ThreadPoolExecutor(max_workers=p.workers) as pool:
        jobs = pool.map(lambda f: _import(f, p, out), files)
        outcomes = list(progress(jobs, total=len(files), desc=f"folder: {p.folder}", unit="img"))
    return list(zip(tasks, outcomes, strict=True))


def _write_reports(
    p: DownloadParams, out: Path, results: list[tuple[Task, Outcome]], engines: dict[str, str]
) -> list[dict]:
    index, urls, rejected = [], [], []
    ids: set[str] = set()
    per_query: dict[str, Counter] = {}
    for t, o in results:
        counts = per_query.setdefault(t.query, Counter())
        counts["urls"] += 1
        if not o.ok:
            counts["rejected"] += 1
            rejected.append(
                {
                    "source": t.source,
                    "query": t.query,
                    "url": shown(t.url),
                    "page_url": shown(t.page_url),
                    "reason": o.reason,
                    "retry": o.retry,
                    "fetched_at": o.fetched_at,
                }
            )
            continue
        urls.append(
            {
                "id": o.id,
                "source": t.source,
                "query": t.query,
                "url": t.url,
                "page_url": t.page_url,
                "fetched_at": o.fetched_at,
            }
        )
        if o.id in ids:
            counts["same bytes as another URL"] += 1
            continue
        ids.add(o.id)
        counts["images"] += 1
        index.append(
            {
                "id": o.id,
                "source": t.source,
                "query": t.query,
                "origin": t.url,
                "page_url": t.page_url,
                "file": o.file,
                "sha256": o.sha256,
                "bytes": o.bytes,
                "width": o.width,
                "height": o.height,
                "format": o.format,
                "fetched_at": o.fetched_at,
                **{k: getattr(t, k, "") for k in META_FIELDS},
            }
        )
    contracts.RAW_INDEX.write(index)
    contracts.RAW_URLS.write(urls)
    contracts.RAW_REJECTED.write(rejected)
    reasons = Counter(_reason_kind(r["reason"]) for r in rejected)
    report = {
        "source": p.source,
        "images": len(index),
        "urls": len(results),
        "rejected": len(rejected),
        "per_query": {q: dict(c) for q, c in per_query.items()},
        "rejection_reasons": dict(reasons.most_common()),
        "engines": engines,
    }
    write_text_atomic(contracts.RAW_REPORT, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return index


def _reason_kind(reason: str) -> str:
    """Group reasons for the report: 'HTTP 404', 'too small', 'SVG', ..."""
    return reason.split(":")[0].split(" (")[0]


def run(params: Params) -> list[dict]:
    """Write the candidate images, index.csv and the reports; return the index rows."""
    p = params.download
    out = paths.RAW
    out.mkdir(parents=True, exist_ok=True)
    if p.source == "synthetic":
        index, truth = _synthetic(p, out)
        contracts.RAW_INDEX.write(index)
        contracts.RAW_TRUTH.write(truth)
        log.info("download: %d images in %s", len(index), out)
        return index
    results, engines = (_folder(p, out), {}) if p.source == "folder" else _web(p, out)
    index = _write_reports(p, out, results, engines)
    rejected = sum(not o.ok for _, o in results)
    log.info(
        "download: %d images in %s, %d rejected (see %s)",
        len(index),
        out,
        rejected,
        contracts.RAW_REJECTED.path,
    )
    if not index:
        raise PipelineError(
            f"download: {p.source}: no usable images ({rejected} refused); reasons in {contracts.RAW_REJECTED.path}"
        )
    return index
