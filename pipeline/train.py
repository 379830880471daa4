"""Stage 5, train: a DCGAN on a few hundred images, made to use a GPU well and never lose progress.

- Small data: DiffAugment (color, translation, cutout) on real and fake images
  in both the D and the G step, and an EMA copy of G for samples.
- Speed: the whole dataset sits on the device as uint8 and is augmented there;
  channels_last; bf16 autocast on CUDA; fused Adam; cudnn.benchmark; optional
  torch.compile. The schedule is counted in images shown (`train.kimg`).
- Progress: the full state goes to models/checkpoint.pt every
  `train.checkpoint_kimg`, on SIGINT/SIGTERM and at the end, atomically. The
  next run resumes from it when its params and data match (`train.resume`).
  A NaN/inf loss stops before anything bad is written.
- Multi-GPU: under `torchrun --nproc_per_node N`, each rank trains on its own
  shard and gradients are all-reduced every step; rank 0 writes everything.

Outputs: models/generator.pt (EMA and raw weights + the config to rebuild G),
models/checkpoint.pt, dvclive/ (metrics, curves, fixed-noise grids).
This file imports only torch, PIL and tqdm (dvclive lazily), for GPU machines.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from pipeline import paths
from pipeline.diffaugment import diff_augment, parse_policy
from pipeline.errors import PipelineError
from pipeline.images import atomic_open, read_csv, write_text_atomic
from pipeline.model import Discriminator, Generator, generator_config

if TYPE_CHECKING:
    from pipeline.params import Params, TrainParams

log = logging.getLogger(__name__)

CHECKPOINT = paths.CHECKPOINT
R1_INTERVAL = 16  # lazy regularisation (StyleGAN2): R1 every 16 D steps, scaled by 16
EMA_RAMPUP = 0.05  # EMA half-life is at most 5% of the images shown so far, so short runs still average
EVAL_IMAGES = 128  # SWD sample size: cheap on CPU, enough to rank runs
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


class TrainingStopped(PipelineError):
    """Training stopped early (signal or non-finite loss); the message says what was kept."""


def pick_device(name: str) -> torch.device:
    """`auto` prefers cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("params.yaml: train.device: cuda requested but no CUDA GPU is visible; use auto")
    return torch.device(name)


def load_dataset(processed: Path, resolution: int) -> torch.Tensor:
    """All processed images as a uint8 tensor (N, 3, resolution, resolution)."""
    index = processed / "index.csv"
    if not index.exists():
        raise PipelineError(f"{index}: not found; run `dvc repro resize` first")
    rows = read_csv(index)
    if not rows:
        raise PipelineError(f"{index}: no training images; accept some in the curation manifest")
    arrays = []
    for r in tqdm(rows, desc="train (loading)", unit="img", leave=False):
        with Image.open(processed / r["file"]) as img:
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
            arrays.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8))
    data = torch.stack(arrays).view(len(rows), resolution, resolution, 3)
    return data.permute(0, 3, 1, 2).contiguous()


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's tanh."""
    return batch.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return x.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def to_image(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """A batch in [-1, 1] as one PIL grid (torchvision's make_grid layout: black 2 px gaps)."""
    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    n, c, h, w = x.shape
    if n == 1:
        grid = x[0]
    else:
        cols = min(nrow, n)
        rows = math.ceil(n / cols)
        grid = torch.zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
        for i in range(n):
            y0, x0 = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
            grid[:, y0 : y0 + h, x0 : x0 + w] = x[i]
    return Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())


def fingerprint(data: torch.Tensor) -> str:
    """Identifies the training set, so a checkpoint is never resumed on other images."""
    return hashlib.sha256(data.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def resume_key(p: TrainParams, data_id: str) -> dict[str, Any]:
    key = {k: v for k, v in dataclasses.asdict(p).items() if k not in RESUME_FREE}
    return key | {"data": data_id}


def _make_adam(params, p: TrainParams, device: torch.device) -> torch.optim.Adam:
    kwargs: dict[str, Any] = {"lr": p.lr, "betas": (p.beta1, p.beta2)}
    if device.type in ("cuda", "cpu"):
        try:  # one kernel for all parameters; CPU support arrived in torch 2.4
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, **kwargs)


class Trainer:
    """G, D, EMA, optimizers and RNG for one rank; `step()` shows one batch to both nets."""

    def __init__(
        self,
        p: TrainParams,
        data: torch.Tensor,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.p, self.device, self.rank, self.world = p, device, rank, world
        self.data = data.to(device)  # this rank's shard, uint8
        self.n = self.data.shape[0]
        self.batch = min(p.batch_size // world, self.n)
        self.images_per_step = self.batch * world
        self.policy = parse_policy(p.diffaugment)
        self.fmt = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
        precision = p.precision if p.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        if precision == "bf16" and device.type not in ("cuda", "cpu"):
            raise PipelineError(f"params.yaml: train.precision: bf16 is not supported on {device.type}")
        self.precision = precision
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(p.seed)  # same initial weights on every rank
        self.g = Generator(p.resolution, p.latent_dim, p.channels, p.max_channels, p.upsample)
        self.d = Discriminator(p.resolution, p.channels, p.max_channels, p.spectral_norm)
        self.g.to(device, memory_format=self.fmt)
        self.d.to(device, memory_format=self.fmt)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.opt_g = _make_adam(self.g.parameters(), p, device)
        self.opt_d = _make_adam(self.d.parameters(), p, device)
        self.g_fwd, self.d_fwd = self.g, self.d
        if p.compile:
            self.g_fwd, self.d_fwd = torch.compile(self.g), torch.compile(self.d)

        # Explicit generators, saved in the checkpoint: a resumed run draws what an uninterrupted one would.
        self.gen_idx = torch.Generator(device="cpu").manual_seed(p.seed * 1000 + rank)
        self.gen_dev = torch.Generator(device=device).manual_seed(p.seed * 1000 + 500 + rank)
        self.fixed_z = torch.randn(
            64, p.latent_dim, generator=torch.Generator().manual_seed(p.seed), device="cpu"
        ).to(device)
        self.perm = torch.randperm(self.n, generator=self.gen_idx).to(device)
        self.cursor = 0
        self.step_count = 0
        self.nimg = 0
        # Per-step stats stay on the device and are summed; reading them is the only sync, at log time.
        self.acc = torch.zeros(4, device=device)
        self.acc_steps = 0

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy:
            return x
        return diff_augment(x, self.policy, self.gen_dev).contiguous(memory_format=self.fmt)

    def _next_real(self) -> torch.Tensor:
        if self.cursor + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen_idx).to(self.device)
            self.cursor = 0
        idx = self.perm[self.cursor : self.cursor + self.batch]
        self.cursor += self.batch
        return to_unit(self.data[idx]).contiguous(memory_format=self.fmt)

    def _sync_grads(self, module: torch.nn.Module) -> None:
        """Average gradients over ranks: one all-reduce of one flat buffer per net and step."""
        if self.world == 1:
            return
        grads = [q.grad for q in module.parameters() if q.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def d_loss(self, out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        if self.p.loss == "hinge":
            return F.relu(1 - out_real).mean() + F.relu(1 + out_fake).mean()
        ones, zeros = torch.ones_like(out_real), torch.zeros_like(out_fake)
        return F.binary_cross_entropy_with_logits(out_real, ones) + F.binary_cross_entropy_with_logits(
            out_fake, zeros
        )

    def g_loss(self, out_fake: torch.Tensor) -> torch.Tensor:
        if self.p.loss == "hinge":
            return -out_fake.mean()
        return F.binary_cross_entropy_with_logits(out_fake, torch.ones_like(out_fake))

    def step(self) -> None:
        p = self.p
        real = self._next_real()
        z = torch.randn(self.batch, p.latent_dim, device=self.device, generator=self.gen_dev)
        with self.autocast():
            fake = self.g_fwd(z)

        # D: real vs fake, both augmented the same way (separate batches, as BatchNorm in D wants).
        self.d.requires_grad_(True)
        with self.autocast():
            out_real = self.d_fwd(self._augment(real)).float()
            out_fake = self.d_fwd(self._augment(fake.detach())).float()
            loss_d = self.d_loss(out_real, out_fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._sync_grads(self.d)
        self.opt_d.step()

        if p.r1_gamma > 0 and (self.step_count + 1) % R1_INTERVAL == 0:
            self._r1(real)

        # G: D is frozen, so its weight gradients are not computed at all.
        self.d.requires_grad_(False)
        with self.autocast():
            loss_g = self.g_loss(self.d_fwd(self._augment(fake)).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._sync_grads(self.g)
        self.opt_g.step()

        self.step_count += 1
        self.nimg += self.images_per_step
        self._update_ema()
        with torch.no_grad():
            stats = torch.stack(
                [loss_d, loss_g, torch.sigmoid(out_real).mean(), torch.sigmoid(out_fake).mean()]
            )
            self.acc += stats.detach().float()
        self.acc_steps += 1

    def _r1(self, real: torch.Tensor) -> None:
        """Lazy R1: gradient penalty on (augmented) reals, in fp32 because it needs double backward."""
        x = self._augment(real).detach().requires_grad_(True)
        out = self.d(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        penalty = grad.square().sum(dim=(1, 2, 3)).mean() * (self.p.r1_gamma / 2) * R1_INTERVAL
        self.opt_d.zero_grad(set_to_none=True)
        penalty.backward()
        self._sync_grads(self.d)
        self.opt_d.step()

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = min(self.p.ema_kimg * 1000, self.nimg * EMA_RAMPUP)
        beta = 0.5 ** (self.images_per_step / max(ema_nimg, 1e-8))
        ema, raw = list(self.g_ema.parameters()), list(self.g.parameters())
        torch._foreach_lerp_(ema, raw, 1.0 - beta)

    @torch.no_grad()
    def ema_for_sampling(self) -> Generator:
        """The EMA generator with BatchNorm statistics of its own (the raw G's do not fit its weights)."""
        g = self.g_ema
        gen = torch.Generator(device=self.device).manual_seed(self.p.seed + 12345)
        bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        g.train()
        for _ in range(8):
            g(torch.randn(64, self.p.latent_dim, device=self.device, generator=gen))
        for m in bns:
            m.momentum = 0.1
        return g.eval()

    @torch.no_grad()
    def sample(self, z: torch.Tensor, ema: bool = True) -> torch.Tensor:
        g = self.ema_for_sampling() if ema else self.g
        was_training = g.training
        g.eval()
        out = torch.cat([g(chunk).float() for chunk in z.split(64)])
        g.train(was_training)
        return out

    def take_stats(self) -> tuple[list[float], int]:
        """Mean loss_d, loss_g, d_real, d_fake since the last call, averaged over ranks."""
        acc = self.acc.clone()
        if self.world > 1:
            dist.all_reduce(acc)
            acc /= self.world
        steps = max(self.acc_steps, 1)
        self.acc.zero_()
        self.acc_steps = 0
        return [v / steps for v in acc.tolist()], steps

    def finite_so_far(self) -> bool:
        acc = self.acc.clone()
        if self.world > 1:
            dist.all_reduce(acc)
        return bool(torch.isfinite(acc).all())

    # -- checkpoint ---------------------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        return {
            "idx": self.gen_idx.get_state(),
            "dev": self.gen_dev.get_state(),
            "perm": self.perm.cpu(),
            "cursor": self.cursor,
        }

    def state_dict(self, data_id: str) -> dict[str, Any] | None:
        """The full training state; a collective under torchrun, and only rank 0 gets it."""
        rng = [self._rng_state()]
        if self.world > 1:
            rng = [None] * self.world
            dist.all_gather_object(rng, self._rng_state())
        if self.world > 1:  # cheap guard: synced gradients and identical Adam keep every rank's G equal
            mine = torch.stack([q.detach().float().sum() for q in self.g.parameters()]).sum().cpu()
            sums = [None] * self.world
            dist.all_gather_object(sums, mine)
            if any(not torch.equal(s, sums[0]) for s in sums) and self.rank == 0:
                log.warning("train: ranks disagree on G's weights at step %d", self.step_count)
        if self.rank != 0:
            return None
        return {
            "version": 1,
            "params": dataclasses.asdict(self.p),
            "resume_key": resume_key(self.p, data_id),
            "step": self.step_count,
            "nimg": self.nimg,
            "G": self.g.state_dict(),
            "D": self.d.state_dict(),
            "G_ema": self.g_ema.state_dict(),
            "opt_G": self.opt_g.state_dict(),
            "opt_D": self.opt_d.state_dict(),
            "rng": rng,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["G"])
        self.d.load_state_dict(state["D"])
        self.g_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_G"])
        self.opt_d.load_state_dict(state["opt_D"])
        self.step_count, self.nimg = state["step"], state["nimg"]
        torch.set_rng_state(state["torch_rng"])
        rng = state["rng"]
        if len(rng) == self.world and rng[self.rank]["perm"].numel() == self.n:
            mine = rng[self.rank]
            self.gen_idx.set_state(mine["idx"])
            self.gen_dev.set_state(mine["dev"])
            self.perm, self.cursor = mine["perm"].to(self.device), mine["cursor"]
        else:  # another number of ranks: the shards differ, so only the weights carry over
            self.gen_idx.manual_seed(self.p.seed * 1000 + self.rank + self.step_count)
            self.gen_dev.manual_seed(self.p.seed * 1000 + 500 + self.rank + self.step_count)
            self.perm, self.cursor = torch.randperm(self.n, generator=self.gen_idx).to(self.device), 0
            if self.rank == 0:
                log.info(
                    "train: checkpoint was written by %d ranks, now %d; data order restarts",
                    len(rng),
                    self.world,
                )

    def export(self) -> dict[str, Any]:
        """models/generator.pt: what sampling needs, EMA weights first."""
        p = self.p
        cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}  # noqa: E731
        ema = self.ema_for_sampling()
        return {
            "config": generator_config(p.resolution, p.latent_dim, p.channels, p.max_channels, p.upsample),
            "state_dict": cpu(ema.state_dict()),
            "raw_state_dict": cpu(self.g.state_dict()),
            "meta": {"steps": self.step_count, "kimg": self.nimg / 1000, "params": dataclasses.asdict(p)},
        }


def save_atomic(obj: dict, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(p: TrainParams, data_id: str, device: torch.device) -> dict | None:
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
    want, have = resume_key(p, data_id), state.get("resume_key", {})
    changed = sorted(k for k in want if want[k] != have.get(k))
    if changed:
        what = ", ".join("training images" if k == "data" else f"train.{k}" for k in changed)
        log.info("train: %s is for other settings (%s); starting fresh", CHECKPOINT, what)
        return None
    return state


def _trim_curves(folder: Path, last_step: int) -> None:
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


def _clear_curves() -> None:
    """What DVCLive's own cleanup removes on a fresh run, done here so that no earlier
    run's curves survive when DVCLive cannot start (the outputs persist in dvc.yaml)."""
    for sub in ("metrics", "images"):
        shutil.rmtree(paths.DVCLIVE / "plots" / sub, ignore_errors=True)
    (paths.DVCLIVE / "metrics.json").unlink(missing_ok=True)


class _Logger:
    """DVCLive when it is installed; otherwise a no-op, so training runs on bare torch."""

    def __init__(self, enabled: bool, resume_step: int) -> None:
        """`resume_step` > 0 continues the curves of the run that checkpoint came from."""
        self.live = None
        if not enabled:
            return
        try:
            if resume_step:
                _trim_curves(paths.DVCLIVE / "plots" / "metrics", resume_step)
            else:
                _clear_curves()
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


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and stops. A second one aborts."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Rank, world size and this rank's device; (0, 1, device) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _eval_swd(t: Trainer, z: torch.Tensor, real: torch.Tensor) -> dict[str, float] | None:
    try:
        from pipeline.swd import multiscale_swd
    except ImportError:
        return None
    fake = to_uint8(t.sample(z))
    swd = multiscale_swd(real.to(fake.device), fake)
    return {(f"eval/{k}" if k.startswith("swd") else f"eval/swd_{k}"): v for k, v in swd.items()}


def run(params: Params) -> dict[str, float]:
    """Train (or resume) for `train.kimg` thousand images; write models/generator.pt and the checkpoint."""
    p = params.train
    if p.resolution > params.resize.size:
        raise PipelineError(
            f"params.yaml: train.resolution: {p.resolution} is above resize.size {params.resize.size}; "
            "lower train.resolution or raise resize.size"
        )
    if p.threads:
        torch.set_num_threads(p.threads)
    rank, world, device = _init_distributed(pick_device(p.device))
    try:
        return _run(p, rank, world, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(p: TrainParams, rank: int, world: int, device: torch.device) -> dict[str, float]:
    if p.batch_size % world:
        raise PipelineError(
            f"params.yaml: train.batch_size: {p.batch_size} does not split over {world} ranks"
        )
    data = load_dataset(paths.PROCESSED, p.resolution)
    data_id = fingerprint(data)
    shard = data[rank::world]
    if shard.shape[0] < 2:
        raise PipelineError(f"{paths.PROCESSED}: {data.shape[0]} images is too few for {world} ranks")
    t = Trainer(p, shard, device, rank, world)
    state = load_checkpoint(p, data_id, device)
    total = max(1, math.ceil(p.kimg * 1000 / t.images_per_step))
    if state is not None and state["step"] >= total:
        log.info("train: %s already reached %.1f kimg; training again from scratch", CHECKPOINT, p.kimg)
        state = None
    if state is not None:
        t.load_state_dict(state)
        if rank == 0:
            log.info(
                "train: resuming from %s at step %d (%.1f kimg)", CHECKPOINT, t.step_count, t.nimg / 1000
            )
    del state
    writer = rank == 0
    if writer:
        log.info(
            "train: %d images at %d px on %s x%d, %s, batch %d, %d steps",
            data.shape[0], p.resolution, device, world, t.precision, t.images_per_step, total,
        )  # fmt: skip

    every = lambda kimg: max(1, round(kimg * 1000 / t.images_per_step))  # noqa: E731
    log_every, sample_every, ckpt_every = every(p.log_kimg), every(p.sample_kimg), every(p.checkpoint_kimg)
    eval_every = every(p.eval_kimg) if p.eval_kimg > 0 else 0
    eval_real = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))[:EVAL_IMAGES]]
    eval_z = torch.randn(
        eval_real.shape[0], p.latent_dim, generator=torch.Generator().manual_seed(p.seed + 1)
    ).to(device)
    swd_missing = False
    logger = _Logger(writer, resume_step=t.step_count)
    metrics: dict[str, float] = {}
    good_step = t.step_count  # last step whose state is known finite
    bar = tqdm(
        total=total * t.images_per_step,
        initial=t.nimg,
        desc="train",
        unit="img",
        unit_scale=True,
        disable=not writer,
    )
    window_start, window_images = time.perf_counter(), 0
    run_start, run_images = window_start, 0

    saved_step = -1

    def checkpoint() -> None:
        nonlocal saved_step
        state = t.state_dict(data_id)
        if writer:
            save_atomic(state, CHECKPOINT)
        saved_step = t.step_count

    def check_finite(now: int) -> None:
        nonlocal good_step
        if not t.finite_so_far():
            where = f"at step {now}" if good_step + 1 == now else f"between step {good_step + 1} and {now}"
            if saved_step >= 0:
                kept = f"{CHECKPOINT} (step {saved_step}) is kept"
            elif CHECKPOINT.exists():
                kept = f"{CHECKPOINT} is kept as it was"
            else:
                kept = "no checkpoint yet"
            raise TrainingStopped(
                f"train: loss became nan or inf {where}; stopped, {kept}; "
                "lower train.lr or set train.r1_gamma, then run again"
            )
        good_step = now

    try:
        with _Signals() as signals:
            while t.step_count < total:
                t.step()
                step = t.step_count
                bar.update(t.images_per_step)
                window_images += t.images_per_step
                run_images += t.images_per_step
                if step % log_every == 0 or step == total:
                    check_finite(step)
                    (loss_d, loss_g, d_real, d_fake), _ = t.take_stats()
                    now = time.perf_counter()
                    metrics = {
                        "train/loss_d": loss_d,
                        "train/loss_g": loss_g,
                        "train/d_real": d_real,
                        "train/d_fake": d_fake,
                        "train/img_per_sec": window_images / max(now - window_start, 1e-9),
                        "train/lr_g": t.opt_g.param_groups[0]["lr"],
                        "train/lr_d": t.opt_d.param_groups[0]["lr"],
                        "kimg": t.nimg / 1000,
                    }
                    window_start, window_images = now, 0
                    bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}", refresh=False)
                    logger.log(step, metrics)
                if writer and (step % sample_every == 0 or step == total):
                    grids = {
                        "fixed_noise_ema.png": to_image(t.sample(t.fixed_z, ema=True)),
                        "fixed_noise_raw.png": to_image(t.sample(t.fixed_z, ema=False)),
                    }
                    logger.log(step, {}, grids)
                if writer and eval_every and (step % eval_every == 0 or step == total) and not swd_missing:
                    swd = _eval_swd(t, eval_z, eval_real)
                    if swd is None:
                        swd_missing = True
                        log.info("train: pipeline.swd is not available; skipping in-training SWD")
                    else:
                        logger.log(step, swd)
                        metrics |= swd
                if step % ckpt_every == 0 or step == total:
                    check_finite(step)
                    checkpoint()
                stop = signals.received is not None
                if world > 1 and step % 8 == 0:  # every rank must stop at the same step
                    flag = torch.tensor([float(stop)], device=device)
                    dist.all_reduce(flag)
                    stop = bool(flag.item())
                elif world > 1:
                    stop = False
                if stop and step < total:
                    check_finite(step)
                    checkpoint()
                    name = signal.Signals(signals.received).name if signals.received else "signal"
                    raise TrainingStopped(
                        f"train: {name} at step {step} ({t.nimg / 1000:.1f} kimg); saved {CHECKPOINT}; "
                        "run the train stage again (dvc repro) to resume"
                    )
    except BaseException:
        bar.close()
        logger.close()
        raise
    bar.close()
    elapsed = time.perf_counter() - run_start
    metrics["train/img_per_sec"] = run_images / max(elapsed, 1e-9)
    if writer:
        save_atomic(t.export(), paths.MODEL)
        logger.summary({"train/img_per_sec": metrics["train/img_per_sec"]})
        logger.close()
        log.info(
            "train: %d steps, %.1f kimg; this run %.0f s at %.0f img/s -> %s",
            t.step_count, t.nimg / 1000, elapsed, metrics["train/img_per_sec"], paths.MODEL,
        )  # fmt: skip
    return metrics
