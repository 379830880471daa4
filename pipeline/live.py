"""Training curves and fixed-noise grids in dvclive/, through DVCLive when it can start.

DVCLive is imported only when a run starts, and training goes on without it:
the trainer must run on a machine with torch alone. A resumed run continues
the curves from its checkpoint's step; a fresh run starts them anew.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from PIL import Image

from pipeline import paths
from pipeline.contracts import TRAIN_CURVES, TRAIN_METRICS
from pipeline.images import write_text_atomic

log = logging.getLogger("pipeline.train")  # the train stage's lines, under the stage's name


def trim_curves(folder: Path, last_step: int) -> None:
    """Drop the rows logged after `last_step` from DVCLive's curves (tab-separated, with a
    `step` column): a resumed run logs those steps again, from the checkpoint. A row torn
    by a hard kill goes too."""
    for tsv in folder.rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        names = lines[0].split("\t") if lines else []
        if "step" not in names:
            continue
        col = names.index("step")
        keep = [
            r
            for r in lines[1:]
            if len(c := r.split("\t")) == len(names) and c[col].isdigit() and int(c[col]) <= last_step
        ]
        if keep != lines[1:]:
            write_text_atomic(tsv, "\n".join([lines[0], *keep]) + "\n")


def clear_curves() -> None:
    """What DVCLive's own cleanup removes on a fresh run, done here so that no earlier
    run's curves survive when DVCLive cannot start (the outputs persist in dvc.yaml)."""
    for sub in ("metrics", "images"):
        shutil.rmtree(paths.DVCLIVE / "plots" / sub, ignore_errors=True)
    TRAIN_METRICS.unlink(missing_ok=True)


class Logger:
    """DVCLive when it is installed and can start; otherwise a no-op."""

    def __init__(self, enabled: bool, resume_step: int) -> None:
        """`resume_step` > 0 continues the curves of the run that checkpoint came from."""
        self.live = None
        if not enabled:
            return
        try:
            if resume_step:
                trim_curves(TRAIN_CURVES, resume_step)
            else:
                clear_curves()
        except OSError as exc:  # the curves are a convenience: never stop training for them
            log.warning("train: could not tidy %s (%s); curves may hold older rows", paths.DVCLIVE, exc)
        try:
            from dvclive import Live
        except ImportError:
            log.info("train: dvclive not installed; metrics are not logged")
            return
        try:
            self.live = Live(str(paths.DVCLIVE), dvcyaml=None, save_dvc_exp=False, resume=resume_step > 0)
        except Exception as exc:  # e.g. scmrepo's "Empty git repo" before the first commit
            log.warning("train: DVCLive could not start (%s); metrics are not logged", exc)

    def log(self, step: int, metrics: dict[str, float], images: dict[str, Image.Image] | None = None) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in metrics.items():
            self.live.log_metric(k, v)
        for name, image in (images or {}).items():
            self.live.log_image(name, image)
        self.live.next_step()

    def summary(self, metrics: dict[str, float]) -> None:
        """Overwrite final values in metrics.json; "train/x" is stored nested, as log_metric does."""
        if self.live is None:
            return
        for name, value in metrics.items():
            *sections, key = name.split("/")
            node = self.live.summary
            for section in sections:
                node = node.setdefault(section, {})
            node[key] = value

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
