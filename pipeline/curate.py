"""Stage 3, curate: keep the candidates a person accepted in the manifest.

The manifest (data/curation/manifest.csv, git-tracked) has columns id,decision,note;
decision is `accept`, `reject`, or blank for pending. Extra columns are kept.
A BOM, CRLF line endings and stray spaces (as spreadsheets write them) are
fine; an unknown decision or a repeated id is an error naming the line.
Rows are written sorted by id; rows for ids that are no longer images are kept.

Decisions follow duplicate groups (data/dedup/groups.csv): a decision on any
member of a group applies to the group's kept image, the one candidate that
goes on to training. See `effective_decisions`.

Outputs (in data/curated/):
  accepted.csv   id,file of the images that go on to resize
  report.json    counts; the pending, orphaned and conflicting ids
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import paths
from pipeline.contracts import (
    CURATED_ACCEPTED,
    CURATED_REPORT,
    DECISIONS,
    DEDUP_CANDIDATES,
    DEDUP_GROUPS,
    MANIFEST_COLUMNS,
)
from pipeline.errors import PipelineError
from pipeline.images import read_csv, write_text_atomic
from pipeline.params import Params

log = logging.getLogger(__name__)

BASE_FIELDS = list(MANIFEST_COLUMNS)
MAX_NOTE = 2000  # characters; the review page and `curate --note` refuse longer notes
MAX_FIELD = 10_000  # characters per cell on reading; longer is a stray quote or a pasted blob
LOCK_TIMEOUT = 30.0  # seconds to wait for another writer of the manifest


class ManifestError(PipelineError):
    """The manifest cannot be read or written; the message names the file and line."""


@dataclass
class Manifest:
    """Rows by id, in file order.

    `fields` are the column keys: id, decision, note, then every other column of
    the file in order. A column with a blank or repeated name gets a made-up key
    and keeps its header text in `labels`, so nothing a person typed is lost.
    """

    fields: list[str] = field(default_factory=lambda: list(BASE_FIELDS))
    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # key -> header text, where they differ

    def decision(self, image_id: str) -> str:
        row = self.rows.get(image_id)
        return row["decision"] if row else ""

    def set(self, image_id: str, decision: str, note: str | None = None) -> None:
        if decision not in DECISIONS + ("",):
            raise ManifestError(f"unknown decision {decision!r}: use accept or reject")
        if note is not None:
            note = check_note(note)
        row = self.rows.setdefault(image_id, {f: "" for f in self.fields} | {"id": image_id})
        row["decision"] = decision
        if note is not None:
            row["note"] = note


def check_note(note: str) -> str:
    """A note as it will be stored: one line, at most MAX_NOTE characters, else ManifestError."""
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ManifestError(f"note is {len(note):,} characters; the most is {MAX_NOTE:,}: shorten it")
    if any(c in note for c in "\r\n\x00"):
        raise ManifestError("note has a line break; write it on one line")
    return note


def _keys(header: list[str]) -> tuple[list[str], dict[str, str]]:
    """A unique key per header cell, and the header text of each made-up key.

    The first column of a name keeps it as its key; a blank or repeated name
    becomes "<name> #<n>" for its n-th occurrence. Occurrences, not positions,
    so the keys stay the same after a write puts id, decision, note first.
    """
    keys: list[str] = []
    labels: dict[str, str] = {}
    seen: dict[str, int] = {}
    for name in header:
        seen[name] = seen.get(name, 0) + 1
        key = name
        if not name or seen[name] > 1:
            key = f"{name or 'unnamed'} #{seen[name]}"
            while key in keys or key in header:
                key += "'"
            labels[key] = name
        keys.append(key)
    return keys, labels


def parse_manifest(text: str, name: str = paths.MANIFEST.name) -> Manifest:
    """Parse manifest text; raises ManifestError naming `name` and the line.

    Strict, because a silent misreading loses decisions: a row must sit on one
    line (a stray `"` would otherwise swallow the rows after it), no cell may be
    longer than MAX_FIELD, and a row may not have more cells than the header.
    """
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    keys: list[str] | None = None
    manifest = Manifest()
    first_line: dict[str, int] = {}
    end = 0  # the last line of the previous record
    while True:
        start = end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ManifestError(
                f'{name}:{start}: cannot read the row ({exc}); look for an unbalanced quote (") '
                "on this line or the ones after it"
            ) from None
        end = reader.line_num
        # A record that ends on a later line than it started is a quoted cell with a line break:
        # almost always a stray quote that swallowed the rows after it.
        if end > start and any("\n" in c or "\r" in c for c in record):
            raise ManifestError(
                f"{name}:{start}: a quoted cell runs on to line {end}; look for an unbalanced "
                f'quote (") on line {start}, and keep each row on one line'
            )
        line = start
        cells = [c.strip() for c in record]
        for n, c in enumerate(cells, 1):
            if len(c) > MAX_FIELD:
                raise ManifestError(
                    f"{name}:{line}: cell {n} is {len(c):,} characters (at most {MAX_FIELD:,}); "
                    "an unbalanced quote? shorten it"
                )
        if not any(cells):
            continue
        if keys is None:
            header = [c.lower() if c.lower() in BASE_FIELDS else c for c in cells]
            if "id" not in header or "decision" not in header:
                raise ManifestError(
                    f"{name}:{line}: header must name the columns id and decision (found: {', '.join(cells)})"
                )
            keys, manifest.labels = _keys(header)
            manifest.fields = BASE_FIELDS + [k for k in keys if k not in BASE_FIELDS]
            continue
        if any(cells[len(keys) :]):
            raise ManifestError(
                f"{name}:{line}: {len(cells)} cells but the header names {len(keys)} columns; "
                "name the extra column in the header or remove the cell"
            )
        row = dict.fromkeys(manifest.fields, "")
        row.update(zip(keys, cells, strict=False))
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Manifest()
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; save it as CSV UTF-8") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_manifest(text, str(path))


def format_manifest(manifest: Manifest) -> str:
    """The file's text: header, then rows sorted by id, so diffs stay small and stable."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([manifest.labels.get(k, k) for k in manifest.fields])
    for image_id in sorted(manifest.rows):
        row = manifest.rows[image_id]
        writer.writerow([row.get(k, "") for k in manifest.fields])
    return buf.getvalue()


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write atomically. A caller that reads, changes and writes holds `locked` throughout."""
    path = Path(path)
    try:
        write_text_atomic(path, format_manifest(manifest))
    except OSError as exc:
        raise ManifestError(_unwritable(path, exc)) from None


def _unwritable(path: Path, exc: OSError) -> str:
    where = exc.filename or path
    return (
        f"{path}: cannot write ({where}: {exc.strerror or exc}); make {path.parent} writable, then try again"
    )


@contextmanager
def locked(path: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock file beside the manifest: every read-merge-write runs inside it.

    flock, so a killed holder never leaves a stale lock; the lock is per open
    file, so threads of one process exclude each other too.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ManifestError(_unwritable(path, exc)) from None
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ManifestError(
                        f"{path}: another program has held {lock.name} for over {timeout:g} s "
                        "(a review page or curate command stuck?); nothing was written, try again"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def read_groups(path: str | Path) -> dict[str, str]:
    """Map every image id to the kept id of its dedup group; {} when dedup wrote none."""
    path = Path(path)
    if not path.exists():
        return {}
    return {r["id"]: r["group"] or r["id"] for r in read_csv(path)}


def kept_id(groups: dict[str, str], image_id: str) -> str:
    """The image a decision on `image_id` applies to: its group's kept image."""
    return groups.get(image_id, image_id)


@dataclass(frozen=True)
class Summary:
    accepted: list[str]
    rejected: list[str]
    pending: list[str]
    orphaned: list[str]
    # kept id -> the duplicate whose row decided it, when the kept image has no row of its own
    inherited: dict[str, str] = field(default_factory=dict)
    # kept ids whose duplicates disagree (one accepted, one rejected): they count as rejected
    conflicts: list[str] = field(default_factory=list)


def effective_decisions(
    manifest: Manifest, candidate_ids: list[str], groups: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Each candidate's decision, following duplicate groups.

    A candidate's own row wins. Without one, the rows of its group's other
    members decide: a re-scrape that keeps a new, larger copy inherits the old
    copy's decision. If those members disagree, reject wins, since training on
    a picture someone rejected is the worse mistake.
    Returns (decision by id, inherited-from by id, conflicting ids).
    """
    groups = groups or {}
    members: dict[str, list[str]] = {}
    for image_id in manifest.rows:
        g = groups.get(image_id)
        if g is not None and g != image_id:
            members.setdefault(g, []).append(image_id)
    decided: dict[str, str] = {}
    inherited: dict[str, str] = {}
    conflicts: list[str] = []
    for c in candidate_ids:
        own = manifest.decision(c)
        if own:
            decided[c] = own
            continue
        votes = {m: manifest.decision(m) for m in sorted(members.get(c, [])) if manifest.decision(m)}
        if not votes:
            decided[c] = ""
            continue
        final = "reject" if "reject" in votes.values() else "accept"
        if len(set(votes.values())) > 1:
            conflicts.append(c)
        decided[c] = final
        inherited[c] = next(m for m, d in votes.items() if d == final)
    return decided, inherited, conflicts


def summarize(manifest: Manifest, candidate_ids: list[str], groups: dict[str, str] | None = None) -> Summary:
    """Split candidates by decision; orphaned are manifest ids that are no longer images."""
    groups = groups or {}
    decided, inherited, conflicts = effective_decisions(manifest, candidate_ids, groups)
    by = {d: [i for i in candidate_ids if decided[i] == d] for d in DECISIONS + ("",)}
    known = set(candidate_ids) | set(groups)
    orphaned = sorted(i for i in manifest.rows if i not in known)
    return Summary(by["accept"], by["reject"], by[""], orphaned, inherited, conflicts)


def candidates(params: Params) -> list[dict]:
    return DEDUP_CANDIDATES.read()


def _load(params: Params) -> tuple[list[dict[str, str]], dict[str, str], Manifest, Summary]:
    cands = candidates(params)
    groups = read_groups(DEDUP_GROUPS.path)
    manifest = read_manifest(paths.MANIFEST)
    return cands, groups, manifest, summarize(manifest, [c["id"] for c in cands], groups)


def run(params: Params) -> Summary:
    """Write accepted.csv for the accepted (and, if asked, pending) candidates."""
    p = params.curate
    cands, _, _, s = _load(params)
    chosen = set(s.accepted) | (set(s.pending) if p.include_pending else set())
    if not chosen:
        raise PipelineError(
            f"{paths.MANIFEST}: no accepted images among {len(cands)} candidates; "
            "accept some with `python -m pipeline review` or `python -m pipeline curate accept ID...` "
            "(or `--all-pending`), or set decision=accept in the manifest, then re-run"
        )
    CURATED_ACCEPTED.write(
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
        "orphaned_ids": s.orphaned,
        "inherited_from_duplicates": s.inherited,
        "conflicting_duplicates": s.conflicts,
    }
    write_text_atomic(CURATED_REPORT, json.dumps(report, indent=2) + "\n")
    if s.pending:
        how = "included" if p.include_pending else "excluded (set curate.include_pending to use them)"
        log.warning("curate: %d pending candidates %s: %s", len(s.pending), how, ", ".join(s.pending[:10]))
    for c in s.conflicts:
        log.warning("curate: duplicates of %s disagree in the manifest; rejected (decide %s itself)", c, c)
    log.info("curate: %d accepted, %d rejected, %d pending", len(s.accepted), len(s.rejected), len(s.pending))
    return s


def status(params: Params) -> str:
    """One line of counts, for `python -m pipeline curate status`."""
    s = _load(params)[3]
    line = (
        f"accepted {len(s.accepted)}, rejected {len(s.rejected)}, "
        f"pending {len(s.pending)}, orphaned {len(s.orphaned)}"
    )
    if s.conflicts:
        line += (
            f" ({len(s.conflicts)} rejected because their duplicates disagree: {', '.join(s.conflicts[:5])})"
        )
    return line


def sync(params: Params) -> int:
    """Add a blank (pending) row for every pending candidate not yet in the manifest."""
    with locked(paths.MANIFEST):
        cands, _, manifest, s = _load(params)
        pending = set(s.pending)
        added = 0
        for c in cands:
            if c["id"] in pending and c["id"] not in manifest.rows:
                manifest.set(c["id"], "")
                added += 1
        if added or not paths.MANIFEST.exists():
            write_manifest(paths.MANIFEST, manifest)
    return added


def decide(
    params: Params,
    decision: str,
    ids: list[str],
    note: str | None = None,
    all_pending: bool = False,
) -> list[str]:
    """Record `decision` for ids (or every pending candidate); returns the ids written.

    An id that is a duplicate is decided on its group's kept image instead. The
    manifest is read and written under its lock, so a review page or another
    command writing at the same time loses nothing.
    """
    if note is not None:
        note = check_note(note)
    with locked(paths.MANIFEST):
        return _decide(params, decision, ids, note, all_pending)


def _decide(params: Params, decision: str, ids: list[str], note: str | None, all_pending: bool) -> list[str]:
    cands, groups, manifest, s = _load(params)
    known = {c["id"] for c in cands}
    unknown = sorted(i for i in ids if i not in known and i not in groups and i not in manifest.rows)
    if unknown:
        raise PipelineError(
            f"unknown image id {unknown[0]}: not a candidate in "
            f"{DEDUP_CANDIDATES.path} nor in {paths.MANIFEST}"
        )
    targets = [kept_id(groups, i) for i in ids]
    for i, t in zip(ids, targets, strict=True):
        if i != t:
            log.info("curate: %s is a duplicate of %s; the decision goes to %s", i, t, t)
    if all_pending:
        targets += s.pending
    targets = list(dict.fromkeys(targets))
    for image_id in targets:
        manifest.set(image_id, decision, note)
    write_manifest(paths.MANIFEST, manifest)
    return targets
