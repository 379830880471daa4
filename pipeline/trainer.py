"""G, D, their EMA, optimizers and RNG of one rank; `step()` shows one batch to both nets.

- Small data: DiffAugment on real and fake images in both the D and the G
  step, and an EMA copy of G (BatchNorm statistics re-estimated) for samples.
- Speed: the dataset sits on the device as uint8 and is augmented there;
  channels_last; bf16 autocast on CUDA and native-bf16 CPUs; fused Adam; cudnn.benchmark; optional
  torch.compile. Per-step stats stay on the device until they are read.
- Determinism: explicit RNGs (saved by pipeline/checkpoint.py), so a resumed
  run draws what an uninterrupted one would.
The losses are in pipeline/loss.py; the loop that calls `step()` is pipeline/train.py.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from pipeline import loss
from pipeline.diffaugment import diff_augment, parse_policy
from pipeline.distributed import average_gradients, sum_over_ranks
from pipeline.errors import PipelineError
from pipeline.model import Discriminator, Generator, generator_config
from pipeline.tensors import to_unit

if TYPE_CHECKING:
    from pipeline.params import TrainParams

EMA_RAMPUP = 0.05  # EMA half-life is at most 5% of the images shown so far, so short runs still average


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX), through oneDNN."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)  # private, so guarded: absent or failing means no
        try:
            if check is not None and check():
                return True
        except Exception:
            pass
    return False


def auto_precision(device: torch.device) -> str:
    """`precision: auto`: bf16 autocast on CUDA and on CPUs with native bf16, else fp32.

    On the 2-core AMD EPYC (AVX512-BF16) this project is built on, bf16 autocast trains the
    default 64 px nets 1.5-1.7x faster than fp32 (README, "Quality study"). Without
    native support bf16 is emulated and slower than fp32.
    """
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def _make_adam(params, p: TrainParams, device: torch.device, lr: float) -> torch.optim.Adam:
    kwargs: dict[str, Any] = {"lr": lr, "betas": (p.beta1, p.beta2)}
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
        precision = p.precision if p.precision != "auto" else auto_precision(device)
        if precision == "bf16" and device.type not in ("cuda", "cpu"):
            raise PipelineError(f"params.yaml: train.precision: bf16 is not supported on {device.type}")
        self.precision = precision
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(p.seed)  # same initial weights on every rank
        self.g = Generator(p.resolution, p.latent_dim, p.channels, p.max_channels, p.upsample)
        self.d = Discriminator(p.resolution, p.d_width, p.max_channels, p.spectral_norm)
        self.g.to(device, memory_format=self.fmt)
        self.d.to(device, memory_format=self.fmt)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.opt_g = _make_adam(self.g.parameters(), p, device, p.lr * p.g_lr_ratio)
        self.opt_d = _make_adam(self.d.parameters(), p, device, p.lr)
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
        self.ema_rampup = EMA_RAMPUP

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy:
            return x
        return diff_augment(x, self.policy, self.gen_dev, self.p.shift).contiguous(memory_format=self.fmt)

    def _next_real(self) -> torch.Tensor:
        if self.cursor + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen_idx).to(self.device)
            self.cursor = 0
        idx = self.perm[self.cursor : self.cursor + self.batch]
        self.cursor += self.batch
        return to_unit(self.data[idx]).contiguous(memory_format=self.fmt)

    def d_loss(self, out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        return loss.d_loss(self.p.loss, out_real, out_fake)

    def g_loss(self, out_fake: torch.Tensor) -> torch.Tensor:
        return loss.g_loss(self.p.loss, out_fake)

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
        self._descend(self.opt_d, loss_d, self.d)

        if p.r1_gamma > 0 and (self.step_count + 1) % loss.R1_INTERVAL == 0:
            penalty = loss.r1_penalty(self.d, self._augment(real), p.r1_gamma, loss.R1_INTERVAL)
            self._descend(self.opt_d, penalty, self.d)

        # G: D is frozen, so its weight gradients are not computed at all.
        self.d.requires_grad_(False)
        with self.autocast():
            loss_g = self.g_loss(self.d_fwd(self._augment(fake)).float())
        self._descend(self.opt_g, loss_g, self.g)

        self.step_count += 1
        self.nimg += self.images_per_step
        self._update_ema()
        with torch.no_grad():
            stats = torch.stack(
                [loss_d, loss_g, torch.sigmoid(out_real).mean(), torch.sigmoid(out_fake).mean()]
            )
            self.acc += stats.detach().float()
        self.acc_steps += 1

    def _descend(self, opt: torch.optim.Optimizer, value: torch.Tensor, net: torch.nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        value.backward()
        average_gradients(net, self.world)
        opt.step()

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = min(self.p.ema_kimg * 1000, self.nimg * self.ema_rampup)
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
        acc = sum_over_ranks(self.acc.clone(), self.world)
        if self.world > 1:
            acc /= self.world
        steps = max(self.acc_steps, 1)
        self.acc.zero_()
        self.acc_steps = 0
        return [v / steps for v in acc.tolist()], steps

    def finite_so_far(self) -> bool:
        return bool(torch.isfinite(sum_over_ranks(self.acc.clone(), self.world)).all())

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
