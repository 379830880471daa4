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
