"""Where each stage reads and writes, relative to the project root.

These are fixed, not params, because dvc.yaml names the same paths as the
stages' deps and outs; the two must never disagree.
"""

from pathlib import Path

RAW = Path("data/raw")
DEDUP = Path("data/dedup")
MANIFEST = Path("data/curation/manifest.csv")
CURATED = Path("data/curated")
PROCESSED = Path("data/processed")
MODEL = Path("models/generator.pt")
SAMPLES = Path("samples")
DVCLIVE = Path("dvclive")
CHECKPOINT = Path("models/checkpoint.pt")
EVALUATE_METRICS = Path("metrics/evaluate.json")

# Caches outside DVC's outputs and git: they survive `dvc repro` deleting outputs.
DOWNLOAD_CACHE = Path(".cache/download")
DEDUP_CACHE = Path(".cache/dedup")
REVIEW_CACHE = Path(".cache/review")
