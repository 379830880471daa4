"""models/checkpoint.pt: the whole training state, and when a run may resume from it.

A checkpoint resumes only when the params that change what a step computes
and the training images are the ones it was written under (its `resume_key`);
then a resumed run draws exactly what an uninterrupted one would. Under
torchrun it holds every rank's data order; with another number of ranks only
the weights carry over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline import distributed, paths
from pipeline.errors import PipelineError
from pipeline.images import atomic_open

if TYPE_CHECKING:
    from pipeline.params import TrainParams
    from pipeline.trainer import Trainer

log = logging.getLogger("pipeline.train")  # the train stage's lines, under the stage's name

CHECKPOINT = paths.CHECKPOINT
# Params that do not change what a step computes: a checkpoint written under other values still resumes.
RESUME_FREE = {
    "kimg",
    "log_kimg",
    "sample_kimg",
    "checkpoint_kimg",
    "eval_kimg",
    "resume",
    "device",
    "threads",
    "compile",
    "precision",
}
# Params added after checkpoints were first written, with the value that computes what the
# trainer did before they existed: an older checkpoint resumes under that value, not under others.
ADDED_LATER = {"d_channels": 0, "g_lr_ratio": 1.0, "shift": 0.125}


def fingerprint(data: torch.Tensor) -> str:
    """Identifies the training set, so a checkpoint is never resumed on other images."""
    return hashlib.sha256(data.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def resume_key(p: TrainParams, data_id: str) -> dict[str, Any]:
    key = {k: v for k, v in dataclasses.asdict(p).items() if k not in RESUME_FREE}
    return key | {"data": data_id}


def _rng_state(t: Trainer) -> dict[str, Any]:
    return {
        "idx": t.gen_idx.get_state(),
        "dev": t.gen_dev.get_state(),
        "perm": t.perm.cpu(),
        "cursor": t.cursor,
    }


def capture(t: Trainer, data_id: str) -> dict[str, Any] | None:
    """The full training state; a collective under torchrun, and only rank 0 gets it."""
    rng = distributed.gather(_rng_state(t), t.world)
    if t.world > 1:  # cheap guard: synced gradients and identical Adam keep every rank's G equal
        mine = torch.stack([q.detach().float().sum() for q in t.g.parameters()]).sum().cpu()
        sums = distributed.gather(mine, t.world)
        if any(not torch.equal(s, sums[0]) for s in sums) and t.rank == 0:
            log.warning("train: ranks disagree on G's weights at step %d", t.step_count)
    if t.rank != 0:
        return None
    return {
        "version": 1,
        "params": dataclasses.asdict(t.p),
        "resume_key": resume_key(t.p, data_id),
        "step": t.step_count,
        "nimg": t.nimg,
        "G": t.g.state_dict(),
        "D": t.d.state_dict(),
        "G_ema": t.g_ema.state_dict(),
        "opt_G": t.opt_g.state_dict(),
        "opt_D": t.opt_d.state_dict(),
        "rng": rng,
        "torch_rng": torch.get_rng_state(),
    }


def restore(t: Trainer, state: dict[str, Any]) -> None:
    """Put a state from `capture` back; the RNG too when the number of ranks is the same."""
    t.g.load_state_dict(state["G"])
    t.d.load_state_dict(state["D"])
    t.g_ema.load_state_dict(state["G_ema"])
    t.opt_g.load_state_dict(state["opt_G"])
    t.opt_d.load_state_dict(state["opt_D"])
    t.step_count, t.nimg = state["step"], state["nimg"]
    torch.set_rng_state(state["torch_rng"])
    rng = state["rng"]
    if len(rng) == t.world and rng[t.rank]["perm"].numel() == t.n:
        mine = rng[t.rank]
        t.gen_idx.set_state(mine["idx"])
        t.gen_dev.set_state(mine["dev"])
        t.perm, t.cursor = mine["perm"].to(t.device), mine["cursor"]
    else:  # another number of ranks: the shards differ, so only the weights carry over
        t.gen_idx.manual_seed(t.p.seed * 1000 + t.rank + t.step_count)
        t.gen_dev.manual_seed(t.p.seed * 1000 + 500 + t.rank + t.step_count)
        t.perm, t.cursor = torch.randperm(t.n, generator=t.gen_idx).to(t.device), 0
        if t.rank == 0:
            log.info(
                "train: checkpoint was written by %d ranks, now %d; data order restarts", len(rng), t.world
            )


def save_atomic(obj: dict, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(p: TrainParams, data_id: str) -> dict | None:
    """The checkpoint to resume from, or None (with a log line saying why) to start fresh."""
    if not p.resume:
        if CHECKPOINT.exists():
            log.info("train: train.resume is false; starting fresh (%s will be overwritten)", CHECKPOINT)
        return None
    if not CHECKPOINT.exists():
        return None
    try:
        state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PipelineError(
            f"{CHECKPOINT}: cannot be read ({exc.__class__.__name__}); set train.resume: false to start fresh"
        ) from None
    want, have = resume_key(p, data_id), ADDED_LATER | state.get("resume_key", {})
    changed = sorted(k for k in want if want[k] != have.get(k))
    if changed:
        what = ", ".join("training images" if k == "data" else f"train.{k}" for k in changed)
        log.info("train: %s is for other settings (%s); starting fresh", CHECKPOINT, what)
        return None
    return state
