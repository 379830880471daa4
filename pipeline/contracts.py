"""What each stage hands the next: every file and CSV column that crosses a stage boundary, declared once.

The folders are in pipeline/paths.py (dvc.yaml names the same ones). A `Table` is one CSV: its
path, the stage that writes it, its columns in order and the type of each column that is not
text. `Table.read` checks the header and returns typed rows (real booleans and numbers);
`Table.write` encodes them and writes atomically. Booleans are "true"/"false" on disk, and this
module is the only place that spells them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.images import write_csv_atomic

TRUE, FALSE = "true", "false"


def encode_bool(value: bool) -> str:
    return TRUE if value else FALSE


def decode_bool(text: str) -> bool:
    """ "true" or "false" (as this project writes them); anything else raises ValueError."""
    if text == TRUE:
        return True
    if text == FALSE:
        return False
    raise ValueError(f"{text!r} is not true or false")


def _decode(text: str, kind: type) -> Any:
    if kind is str:
        return text
    if text == "":
        return None  # an empty cell of a number or boolean column: not known
    if kind is bool:
        return decode_bool(text)
    return kind(text)


def _encode(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return encode_bool(value)
    return value


@dataclass(frozen=True)
class Table:
    """One CSV one stage writes and another reads."""

    path: Path
    stage: str  # the stage that writes it: "run `dvc repro <stage>`" fixes a missing or old file
    columns: tuple[str, ...]
    types: Mapping[str, type] = field(default_factory=dict)  # columns that are not text: int, float, bool
    optional: tuple[str, ...] = ()  # written after `columns`; files from before they existed lack them

    @property
    def fields(self) -> list[str]:
        return [*self.columns, *self.optional]

    def read(self, root: str | Path = ".") -> list[dict[str, Any]]:
        """Typed rows; a missing file, a missing column or a bad value is one line naming file and line."""
        path = Path(root) / self.path
        if not path.exists():
            raise PipelineError(f"{self.path}: not found; run `dvc repro {self.stage}` first")
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in self.columns if c not in header]
            if missing:
                raise PipelineError(
                    f"{self.path}:1: no column {missing[0]!r}; written by an older version? "
                    f"run `dvc repro --force {self.stage}`"
                )
            rows = []
            for row in reader:
                for name in self.optional:
                    row.setdefault(name, "")
                for name, kind in self.types.items():
                    try:
                        row[name] = _decode(row.get(name) or "", kind)
                    except ValueError:
                        raise PipelineError(
                            f"{self.path}:{reader.line_num}: {name}: {row[name]!r} is not a {kind.__name__}; "
                            f"run `dvc repro --force {self.stage}`"
                        ) from None
                rows.append(row)
        return rows

    def write(self, rows: Iterable[Mapping[str, Any]], root: str | Path = ".") -> None:
        """Encode typed rows (booleans as true/false, None as empty) and write the file atomically."""
        write_csv_atomic(Path(root) / self.path, self.fields, (self._encode_row(row) for row in rows))

    def _encode_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        missing = [c for c in self.columns if c not in row]
        if missing:  # a bug in the writing stage, not a user's problem
            raise ValueError(f"{self.path}: row {dict(row)!r} has no {missing[0]!r}")
        return {k: _encode(v) for k, v in row.items()}


# --- download -> dedup, resize, review ------------------------------------------------------------
# What an engine says about an image, as it gave it (issue 13); empty when it says nothing.
LICENCE_COLUMNS = ("title", "license", "license_version", "license_url", "creator", "attribution")
RAW_INDEX = Table(
    paths.RAW / "index.csv",
    "download",
    (
        "id",
        "source",
        "query",
        "origin",  # the image URL, or the path it was imported from
        "page_url",  # the page the image was found on (its landing page)
        "file",  # name inside data/raw
        "sha256",
        "bytes",
        "width",
        "height",
        "format",
        "fetched_at",
    ),
    {"bytes": int, "width": int, "height": int},
    optional=LICENCE_COLUMNS,
)
RAW_URLS = Table(
    paths.RAW / "urls.csv", "download", ("id", "source", "query", "url", "page_url", "fetched_at")
)
RAW_REJECTED = Table(
    paths.RAW / "rejected.csv",
    "download",
    ("source", "query", "url", "page_url", "reason", "retry", "fetched_at"),
    {"retry": bool},
)
RAW_TRUTH = Table(  # synthetic source only; only tests read it
    paths.RAW / "ground_truth.csv", "download", ("id", "kind", "subject", "duplicate_of", "transform")
)
RAW_REPORT = paths.RAW / "report.json"

# --- dedup -> curate, review ----------------------------------------------------------------------
DEDUP_GROUPS = Table(  # every readable image, with the kept image of its group
    paths.DEDUP / "groups.csv",
    "dedup",
    ("id", "group", "kept", "distance", "score", "colour_diff", "match", "file"),
    {"kept": bool, "distance": int, "score": float, "colour_diff": float},
)
DEDUP_CANDIDATES = Table(  # the kept images: what curation decides on
    paths.DEDUP / "candidates.csv",
    "dedup",
    ("id", "file", "width", "height", "group_size"),
    {"width": int, "height": int, "group_size": int},
)
DEDUP_REPORT = paths.DEDUP / "report.json"
DEDUP_REPORT_HTML = paths.DEDUP / "report.html"
DEDUP_SHEET = paths.DEDUP / "groups.png"

# --- people (review page, CLI, editor) -> curate --------------------------------------------------
# A git-tracked input, never a stage output; pipeline/curate.py reads and writes it (strictly).
MANIFEST = paths.MANIFEST
MANIFEST_COLUMNS = ("id", "decision", "note")
DECISIONS = ("accept", "reject")  # an empty decision is pending

# --- curate -> resize -----------------------------------------------------------------------------
CURATED_ACCEPTED = Table(paths.CURATED / "accepted.csv", "curate", ("id", "file"))
CURATED_REPORT = paths.CURATED / "report.json"

# --- resize -> train, sample, evaluate ------------------------------------------------------------
PROCESSED_INDEX = Table(
    paths.PROCESSED / "index.csv",
    "resize",
    ("id", "file", "source_width", "source_height", "source_format", "source_mode", "mode", "size"),
    {"source_width": int, "source_height": int, "size": int},
)
PROCESSED_SKIPPED = Table(paths.PROCESSED / "skipped.csv", "resize", ("id", "file", "reason"))
# The training set's credits (issue 13): one row per training image, with where it came from
# and what its search engine said about its licence (empty when it said nothing).
PROCESSED_ATTRIBUTION = Table(
    paths.PROCESSED / "ATTRIBUTION.csv",
    "resize",
    ("id", "file", "source", "origin", "page_url", *LICENCE_COLUMNS),
)
CONTACT_SHEET = paths.PROCESSED / "contact_sheet.png"

# --- train -> sample, evaluate, the flow ----------------------------------------------------------
MODEL = paths.MODEL
CHECKPOINT = paths.CHECKPOINT
TRAIN_METRICS = paths.DVCLIVE / "metrics.json"
TRAIN_CURVES = paths.DVCLIVE / "plots" / "metrics"
TRAIN_IMAGES = paths.DVCLIVE / "plots" / "images"

# --- sample, evaluate -> people, the flow ---------------------------------------------------------
SAMPLE_GRID = paths.SAMPLES / "grid.png"
SAMPLE_GRID_RAW = paths.SAMPLES / "grid_raw.png"
SAMPLE_INTERPOLATION = paths.SAMPLES / "interpolation.gif"
SAMPLE_NEAREST = paths.SAMPLES / "nearest.png"
EVALUATE_METRICS = paths.EVALUATE_METRICS

TABLES = [
    RAW_INDEX,
    RAW_URLS,
    RAW_REJECTED,
    RAW_TRUTH,
    DEDUP_GROUPS,
    DEDUP_CANDIDATES,
    CURATED_ACCEPTED,
    PROCESSED_INDEX,
    PROCESSED_SKIPPED,
    PROCESSED_ATTRIBUTION,
]
