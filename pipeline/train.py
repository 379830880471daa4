"""Stage 5, train: a DCGAN on a few hundred images, made to use a GPU well and never lose progress.

This file is the loop and its wiring; the parts it wires:
  trainer.py      G, D, EMA, optimizers and RNG of one rank; one step (losses in loss.py)
  checkpoint.py   models/checkpoint.pt, and when a run may resume from it
  live.py         DVCLive curves and fixed-noise grids in dvclive/
  signals.py      Ctrl-C / SIGTERM: checkpoint, then stop
  distributed.py  torchrun: each rank trains on its own shard, rank 0 writes
  tensors.py      the dataset as one uint8 tensor, devices, grids

The schedule is counted in images shown (`train.kimg`); every `train.*_kimg`
interval, and the last step, logs, draws grids, evaluates SWD or checkpoints.
The full state goes to models/checkpoint.pt every `train.checkpoint_kimg`, on
SIGINT/SIGTERM and at the end, atomically; a NaN/inf loss stops before
anything bad is written. Outputs: models/generator.pt (EMA and raw weights +
the config to rebuild G), models/checkpoint.pt, dvclive/. The training
modules import only torch, torchvision, PIL and tqdm (DVCLive lazily), for GPU machines.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import TYPE_CHECKING

import torch
from PIL import Image

from pipeline import distributed, paths
from pipeline.checkpoint import capture, fingerprint, load_checkpoint, restore, save_atomic
from pipeline.errors import PipelineError
from pipeline.live import Logger
from pipeline.progress import progress
from pipeline.signals import StopSignals
from pipeline.swd import multiscale_swd
from pipeline.tensors import load_dataset, pick_device, to_image, to_uint8
from pipeline.trainer import Trainer

if TYPE_CHECKING:
    from pipeline.params import Params, TrainParams

log = logging.getLogger(__name__)

CHECKPOINT = paths.CHECKPOINT
EVAL_IMAGES = 128  # SWD sample size: cheap on CPU, enough to rank runs


class TrainingStopped(PipelineError):
    """Training stopped early (signal or non-finite loss); the message says what was kept."""


@dataclasses.dataclass
class Progress:
    """What the loop carries from step to step."""

    t: Trainer
    total: int  # steps this run ends at
    data_id: str
    saved_step: int = -1  # last step this run wrote to the checkpoint
    good_step: int = 0  # last step whose losses are known finite
    window_start: float = dataclasses.field(default_factory=time.perf_counter)
    window_images: int = 0

    def due(self, kimg: float) -> bool:
        """Whether the step just taken ends an interval of `kimg` thousand images, or the run."""
        every = max(1, round(kimg * 1000 / self.t.images_per_step))
        return self.t.step_count % every == 0 or self.t.step_count == self.total


def set_threads(threads: int) -> int:
    """torch's CPU threads: `threads`, at most this machine's CPUs (more only slows a step down)."""
    cpus = os.cpu_count() or 1
    if threads > cpus:
        log.warning("train: train.threads is %d but this machine has %d CPUs; using %d", threads, cpus, cpus)
    torch.set_num_threads(min(threads, cpus))
    return torch.get_num_threads()


def run(params: Params) -> dict[str, float]:
    """Train (or resume) for `train.kimg` thousand images; write models/generator.pt and the checkpoint."""
    p = params.train
    if p.resolution > params.resize.size:
        raise PipelineError(
            f"params.yaml: train.resolution: {p.resolution} is above resize.size {params.resize.size}; "
            "lower train.resolution or raise resize.size"
        )
    if p.threads:
        set_threads(p.threads)
    rank, world, device = distributed.init(pick_device(p.device))
    try:
        return _train(p, rank, world, device)
    finally:
        distributed.close(world)


def _train(p: TrainParams, rank: int, world: int, device: torch.device) -> dict[str, float]:
    if p.batch_size % world:
        raise PipelineError(
            f"params.yaml: train.batch_size: {p.batch_size} does not split over {world} ranks"
        )
    data = load_dataset(paths.PROCESSED, p.resolution)
    shard = data[rank::world]
    if shard.shape[0] < 2:
        raise PipelineError(f"{paths.PROCESSED}: {data.shape[0]} images is too few for {world} ranks")
    t = Trainer(p, shard, device, rank, world)
    s = Progress(t, total=max(1, math.ceil(p.kimg * 1000 / t.images_per_step)), data_id=fingerprint(data))
    _resume(s)
    s.good_step = first_step = t.step_count
    writer = rank == 0
    if writer:
        log.info(
            "train: %d images at %d px on %s x%d, %s, batch %d, %d steps",
            data.shape[0], p.resolution, device, world, t.precision, t.images_per_step, s.total,
        )  # fmt: skip
    eval_real = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))[:EVAL_IMAGES]]
    eval_z = torch.randn(
        eval_real.shape[0], p.latent_dim, generator=torch.Generator().manual_seed(p.seed + 1)
    ).to(device)
    logger = Logger(writer, resume_step=t.step_count)
    metrics: dict[str, float] = {}
    bar = progress(total=s.total * t.images_per_step, initial=t.nimg, desc="train", unit="img", unit_scale=True,
               disable=not writer)  # fmt: skip
    run_start = s.window_start = time.perf_counter()
    try:
        with StopSignals() as signals:
            while t.step_count < s.total:
                t.step()
                step = t.step_count
                bar.update(t.images_per_step)
                s.window_images += t.images_per_step
                if s.due(p.log_kimg):
                    _check_finite(s)
                    metrics = _stats(s)
                    bar.set_postfix(loss_d=f"{metrics['train/loss_d']:.3f}",
                                    loss_g=f"{metrics['train/loss_g']:.3f}", refresh=False)  # fmt: skip
                    logger.log(step, metrics)
                if writer and s.due(p.sample_kimg):
                    logger.log(step, {}, _grids(t))
                if writer and p.eval_kimg > 0 and s.due(p.eval_kimg):
                    swd = _swd(t, eval_z, eval_real)
                    logger.log(step, swd)
                    metrics |= swd
                if s.due(p.checkpoint_kimg):
                    _save(s, writer)
                stop = distributed.agree_to_stop(signals.received is not None, step, world, device)
                if stop and step < s.total:
                    _save(s, writer)
                    raise TrainingStopped(
                        f"train: {signals.name()} at step {step} ({t.nimg / 1000:.1f} kimg); "
                        f"saved {CHECKPOINT}; run the train stage again (dvc repro) to resume"
                    )
    except BaseException:
        bar.close()
        logger.close()
        raise
    bar.close()
    elapsed = time.perf_counter() - run_start
    metrics["train/img_per_sec"] = (t.step_count - first_step) * t.images_per_step / max(elapsed, 1e-9)
    if writer:
        save_atomic(t.export(), paths.MODEL)
        logger.summary({"train/img_per_sec": metrics["train/img_per_sec"]})
        logger.close()
        log.info(
            "train: %d steps, %.1f kimg; this run %.0f s at %.0f img/s -> %s",
            t.step_count, t.nimg / 1000, elapsed, metrics["train/img_per_sec"], paths.MODEL,
        )  # fmt: skip
    return metrics


def _resume(s: Progress) -> None:
    """Continue from the checkpoint when it is for these params and images and not yet finished."""
    state = load_checkpoint(s.t.p, s.data_id)
    if state is not None and state["step"] >= s.total:
        log.info("train: %s already reached %.1f kimg; training again from scratch", CHECKPOINT, s.t.p.kimg)
        state = None
    # Each rank reads its own disk: on several machines their checkpoints can differ.
    steps = distributed.gather(None if state is None else state["step"], s.t.world)
    if len(set(steps)) > 1:
        raise PipelineError(
            f"train: ranks found different {CHECKPOINT} (step by rank: {steps}); give every machine "
            "the same file (copy it from the first, or a shared folder), or set train.resume: false"
        )
    if state is not None:
        restore(s.t, state)
        if s.t.rank == 0:
            log.info(
                "train: resuming from %s at step %d (%.1f kimg)", CHECKPOINT, s.t.step_count, s.t.nimg / 1000
            )


def _stats(s: Progress) -> dict[str, float]:
    """The mean losses and D outputs since the last call, and the speed over that window."""
    t, now = s.t, time.perf_counter()
    (loss_d, loss_g, d_real, d_fake), _ = t.take_stats()
    metrics = {
        "train/loss_d": loss_d,
        "train/loss_g": loss_g,
        "train/d_real": d_real,
        "train/d_fake": d_fake,
        "train/img_per_sec": s.window_images / max(now - s.window_start, 1e-9),
        "train/lr_g": t.opt_g.param_groups[0]["lr"],
        "train/lr_d": t.opt_d.param_groups[0]["lr"],
        "kimg": t.nimg / 1000,
    }
    s.window_start, s.window_images = now, 0
    return metrics


def _grids(t: Trainer) -> dict[str, Image.Image]:
    """The fixed latents through the EMA and the raw generator."""
    ema, raw = t.sample(t.fixed_z, ema=True), t.sample(t.fixed_z, ema=False)
    return {"fixed_noise_ema.png": to_image(ema), "fixed_noise_raw.png": to_image(raw)}


def _swd(t: Trainer, z: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """SWD of the EMA generator's images of `z` to `real`, as eval/ metrics."""
    swd = multiscale_swd(real.to(t.device), to_uint8(t.sample(z)))
    return {(f"eval/{k}" if k.startswith("swd") else f"eval/swd_{k}"): v for k, v in swd.items()}


def _check_finite(s: Progress) -> None:
    """Stop with one line naming the step and what checkpoint is kept, if a loss went nan or inf."""
    now = s.t.step_count
    if not s.t.finite_so_far():
        where = f"at step {now}" if s.good_step + 1 == now else f"between step {s.good_step + 1} and {now}"
        if s.saved_step >= 0:
            kept = f"{CHECKPOINT} (step {s.saved_step}) is kept"
        elif CHECKPOINT.exists():
            kept = f"{CHECKPOINT} is kept as it was"
        else:
            kept = "no checkpoint yet"
        raise TrainingStopped(
            f"train: loss became nan or inf {where}; stopped, {kept}; "
            "lower train.lr or set train.r1_gamma, then run again"
        )
    s.good_step = now


def _save(s: Progress, writer: bool) -> None:
    """Checkpoint, never a state with a non-finite loss in it; a collective under torchrun."""
    _check_finite(s)
    state = capture(s.t, s.data_id)
    if writer:
        save_atomic(state, CHECKPOINT)
    s.saved_step = s.t.step_count
