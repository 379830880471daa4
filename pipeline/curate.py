"""Stage 3, curate: keep the candidates a person accepted in the manifest.

The manifest (data/curation/manifest.csv, git-tracked) has columns id,decision,note;
decision is `accept`, `reject`, or blank for pending. Extra columns are kept.
A BOM, CRLF line endings and stray spaces (as spreadsheets write them) are
fine; an unknown decision or a repeated id is an error naming the line.

Outputs (in data/curated/):
  accepted.csv   id,file of the images that go on to resize
  report.json    counts, and the pending and orphaned ids
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.images import read_csv, write_csv_atomic, write_text_atomic
from pipeline.params import Params

log = logging.getLogger(__name__)

DECISIONS = ("accept", "reject")
BASE_FIELDS = ["id", "decision", "note"]


class ManifestError(PipelineError):
    """The manifest cannot be read; the message names the file and line."""


@dataclass
class Manifest:
    """Rows by id, in file order; `fields` keeps any extra columns a person added."""

    fields: list[str] = field(default_factory=lambda: list(BASE_FIELDS))
    rows: dict[str, dict[str, str]] = field(default_factory=dict)

    def decision(self, image_id: str) -> str:
        row = self.rows.get(image_id)
        return row["decision"] if row else ""

    def set(self, image_id: str, decision: str, note: str | None = None) -> None:
        if decision not in DECISIONS + ("",):
            raise ManifestError(f"unknown decision {decision!r}: use accept or reject")
        row = self.rows.setdefault(image_id, {f: "" for f in self.fields} | {"id": image_id})
        row["decision"] = decision
        if note is not None:
            row["note"] = note


def parse_manifest(text: str, name: str = "manifest.csv") -> Manifest:
    """Parse manifest text; raises ManifestError naming `name` and the line."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    manifest = Manifest()
    first_line: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        cells = [c.strip() for c in record]
        if not any(cells):
            continue
        if header is None:
            header = [c.lower() if c.lower() in BASE_FIELDS else c for c in cells]
            if "id" not in header or "decision" not in header:
                raise ManifestError(
                    f"{name}:{line}: header must name the columns id and decision (found: {', '.join(cells)})"
                )
            manifest.fields = BASE_FIELDS + [h for h in header if h not in BASE_FIELDS and h]
            continue
        row = dict.fromkeys(manifest.fields, "")
        for key, value in zip(header, cells, strict=False):
            if key:
                row[key] = value
        image_id = row["id"]
        if not image_id:
            raise ManifestError(f"{name}:{line}: row has no id")
        decision = row["decision"].lower()
        if decision not in DECISIONS + ("",):
            raise ManifestError(
                f"{name}:{line}: unknown decision {row['decision']!r} for {image_id} "
                "(use accept or reject, or leave it blank for pending)"
            )
        row["decision"] = decision
        if image_id in first_line:
            raise ManifestError(
                f"{name}:{line}: duplicate id {image_id} (also on line {first_line[image_id]}); "
                "keep one of the two rows"
            )
        first_line[image_id] = line
        manifest.rows[image_id] = row
    return manifest


def read_manifest(path: str | Path) -> Manifest:
    """Read the manifest file; a missing file is an empty manifest (all pending)."""
    path = Path(path)
    if not path.exists():
        return Manifest()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; save it as CSV UTF-8") from None
    return parse_manifest(text, str(path))


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write atomically, sorted by id, so diffs stay small and stable."""
    rows = [manifest.rows[k] for k in sorted(manifest.rows)]
    write_csv_atomic(path, manifest.fields, rows)


@dataclass(frozen=True)
class Summary:
    accepted: list[str]
    rejected: list[str]
    pending: list[str]
    orphaned: list[str]


def summarize(manifest: Manifest, candidate_ids: list[str]) -> Summary:
    """Split candidates by decision; orphaned are manifest ids no longer candidates."""
    cands = set(candidate_ids)
    by = {d: [i for i in candidate_ids if manifest.decision(i) == d] for d in DECISIONS + ("",)}
    orphaned = sorted(i for i in manifest.rows if i not in cands)
    return Summary(by["accept"], by["reject"], by[""], orphaned)


def candidates(params: Params) -> list[dict[str, str]]:
    path = paths.DEDUP / "candidates.csv"
    if not path.exists():
        raise PipelineError(f"{path}: not found; run `dvc repro dedup` first")
    return read_csv(path)


def run(params: Params) -> Summary:
    """Write accepted.csv for the accepted (and, if asked, pending) candidates."""
    p = params.curate
    cands = candidates(params)
    manifest = read_manifest(paths.MANIFEST)
    s = summarize(manifest, [c["id"] for c in cands])
    chosen = set(s.accepted) | (set(s.pending) if p.include_pending else set())
    if not chosen:
        raise PipelineError(
            f"{paths.MANIFEST}: no accepted images among {len(cands)} candidates; "
            "accept some with `python -m pipeline curate accept ID...` "
            "(or `--all-pending`), or set decision=accept in the manifest, then re-run"
        )
    out = paths.CURATED
    write_csv_atomic(
        out / "accepted.csv",
        ["id", "file"],
        ({"id": c["id"], "file": c["file"]} for c in cands if c["id"] in chosen),
    )
    report = {
        "candidates": len(cands),
        "accepted": len(s.accepted),
        "rejected": len(s.rejected),
        "pending": len(s.pending),
        "orphaned": len(s.orphaned),
        "include_pending": p.include_pending,
        "used": len(chosen),
        "pending_ids": s.pending,
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    if s.pending:
        how = "included" if p.include_pending else "excluded (set curate.include_pending to use them)"
        log.warning("curate: %d pending candidates %s: %s", len(s.pending), how, ", ".join(s.pending[:10]))
    log.info("curate: %d accepted, %d rejected, %d pending", len(s.accepted), len(s.rejected), len(s.pending))
    return s


def status(params: Params) -> str:
    """One line of counts, for `python -m pipeline curate status`."""
    manifest = read_manifest(paths.MANIFEST)
    s = summarize(manifest, [c["id"] for c in candidates(params)])
    return (
        f"accepted {len(s.accepted)}, rejected {len(s.rejected)}, "
        f"pending {len(s.pending)}, orphaned {len(s.orphaned)}"
    )


def sync(params: Params) -> int:
    """Add a blank (pending) row for every candidate not yet in the manifest."""
    manifest = read_manifest(paths.MANIFEST)
    added = 0
    for c in candidates(params):
        if c["id"] not in manifest.rows:
            manifest.set(c["id"], "")
            added += 1
    write_manifest(paths.MANIFEST, manifest)
    return added


def decide(
    params: Params,
    decision: str,
    ids: list[str],
    note: str | None = None,
    all_pending: bool = False,
) -> list[str]:
    """Record `decision` for ids (or every pending candidate); returns the ids changed."""
    manifest = read_manifest(paths.MANIFEST)
    known = [c["id"] for c in candidates(params)]
    if all_pending:
        ids = ids + [i for i in known if manifest.decision(i) == ""]
    unknown = sorted(set(ids) - set(known) - set(manifest.rows))
    if unknown:
        raise PipelineError(
            f"unknown image id {unknown[0]}: not a candidate in "
            f"{paths.DEDUP}/candidates.csv nor in {paths.MANIFEST}"
        )
    for image_id in ids:
        manifest.set(image_id, decision, note)
    write_manifest(paths.MANIFEST, manifest)
    return ids
