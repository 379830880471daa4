"""Quality study: which training choices give better samples for the same compute, on the built-in set.

Each configuration is the `train:` section of params.yaml, then STUDY_BASE
(the defaults the study started from), then a few overrides. Every run trains pipeline.trainer.Trainer on the processed training
set (data/processed, as `dvc repro resize` leaves it) on ONE CPU thread, for a
budget of **CPU seconds of this process** (time.process_time), not wall-clock:
the machine is shared, and CPU time of a 1-thread process is what a config
costs whatever else runs. The budget is stated as a fraction of the default
run's: the defaults, seed 0, are trained to STUDY_BASE's `kimg` (45) once and their CPU
time is the unit (`budget_cpu_s` in the results file).

After training, like the evaluate stage: SWD (pipeline/swd.py) of 512 EMA
samples (fixed latents, seed 123) against the whole training set, over the
real-vs-real floor (two random halves); plus the median RMS distance from a
sample to its nearest training image (memorising would drive it to 0). During
training, every `--curve-kimg`, the SWD the trainer logs to DVCLive
(`eval/swd_avg`: 128 EMA samples vs 128 training images) is recorded against
CPU minutes; evaluation time is not counted in the budget.

Per configuration it prints img/s (per CPU second), kimg reached, SWD/floor
mean ± sample std over seeds, and writes an 8x8 EMA grid per run into the
output folder. Results go to `<out>/results.jsonl`, one line per run; runs
already there are skipped, so an interrupted study continues.

    python benchmarks/quality_study.py --round screen --fraction 0.33 --configs all --seeds 0
    python benchmarks/quality_study.py --round r7   # a round's table: without --configs, trains nothing
    python benchmarks/quality_study.py --round final --seeds 0,1,2 --configs defaults,hinge
    python benchmarks/quality_study.py --plot defaults,lr_x2 --round final  # SWD-vs-minutes PNG, grids
    python benchmarks/quality_study.py --round full  # the table of every whole-budget run, trains nothing
    python benchmarks/quality_study.py --tiny --out /tmp/q   # seconds; what the unit test runs
    python benchmarks/quality_study.py --truncation models/generator.pt  # a trained G at truncated latents
    python benchmarks/quality_study.py --drs models/checkpoint.pt  # a trained run's D picks the samples

Configs whose overrides are not TrainParams fields (`lr_g`, `lr_d`, `lecam`,
`ema_rampup`, `lr_decay`, `mirror`, `mbstd`, `sle`, `skip`, `rel`, `blur`, `d_bn`, `g_top`, `ada`, `smooth`, `recon`, `bcr`, `attn`, `g_norm`, `topk`, `noise`, `res`) are set by this script after the
Trainer is built: screening only, they are not training params unless the study shows they help
(`d_channels` was one, and became a param, as pytorch/examples' `ndf`; `lr_g` became `g_lr_ratio`).
`d_half` runs were recorded before that and built the narrower D after G with
another seed (seed + 777); `d16` is the same config through the Trainer. Results and verdicts:
README, "Quality study".
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.evaluate import split_halves
from pipeline.params import TrainParams, load_params
from pipeline.sample import latents, nearest_neighbours
from pipeline.swd import multiscale_swd
from pipeline.tensors import load_dataset, to_image, to_uint8, to_unit
from pipeline.trainer import Trainer

# The defaults this study started from. params.yaml has since moved on (to translation-only
# DiffAugment, bf16 on CPUs that have it and a higher kimg: `aug_t_bf16` at the budget; then G's
# learning rate 3x D's: `new_glr6`; `channels` is pinned too, should params.yaml's width move), so every
# config, "defaults" included, is params.yaml's train section, then these, then its own overrides;
# rows recorded before and after the change stay comparable. `kimg` only sizes the budget unit.
STUDY_BASE: dict[str, Any] = {
    "diffaugment": "color,translation",
    "precision": "fp32",
    "kimg": 45,
    "g_lr_ratio": 1.0,
    "channels": 32,
    "shift": 0.125,
}

# name -> overrides of STUDY_BASE. "defaults" is the baseline every ratio is against.
# D is as wide as G (params.yaml's `d_channels: 0`) unless a config sets it.
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "d16": {"d_channels": 16},  # the same as d_half, through the Trainer's own code path
    # losses and regularisers
    "hinge": {"loss": "hinge"},
    "sn_hinge": {"spectral_norm": True, "loss": "hinge"},
    "r1_0.2": {"r1_gamma": 0.2},
    "r1_1": {"r1_gamma": 1.0},
    # augmentation
    "aug_ctc": {"diffaugment": "color,translation,cutout"},
    "aug_t": {"diffaugment": "translation"},
    "aug_none": {"diffaugment": "none"},
    # architecture: widths and G/D balance
    "ch48": {"channels": 48},
    "ch24": {"channels": 24},
    "d_half": {"d_channels": 16},
    "g24_d16": {"channels": 24, "d_channels": 16},
    # optimisation
    "ttur": {"lr_g": 0.0001, "lr_d": 0.0004},
    "lr_x2": {"lr": 0.0004},
    "lr_half": {"lr": 0.0001},
    "bs16": {"batch_size": 16},
    "bs64": {"batch_size": 64},
    "betas_0_99": {"beta1": 0.0, "beta2": 0.99},
    "ema_1": {"ema_kimg": 1.0},
    "lecam": {"lecam": 0.3},
    "ema_r15": {"ema_rampup": 0.15},
    "lr_decay": {"lr_decay": 0.5},
    "lr_x2_decay": {"lr": 0.0004, "lr_decay": 0.5},
    # speed: bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX): 1.6x the images per CPU second here
    "bf16": {"precision": "bf16"},
    "aug_t_bf16": {"diffaugment": "translation", "precision": "bf16"},
    # round 3: widths on top of the new defaults
    "new_ch48": {"diffaugment": "translation", "precision": "bf16", "channels": 48},
    "new_d48": {"diffaugment": "translation", "precision": "bf16", "d_channels": 48},
    # round 4, on top of the new defaults: x-flipped real images (StyleGAN2-ADA's --mirror), minibatch std
    "new_mirror": {"diffaugment": "translation", "precision": "bf16", "mirror": True},
    "new_mbstd": {"diffaugment": "translation", "precision": "bf16", "mbstd": True},
    # round 5: FastGAN's skip-layer excitation in G; a shorter EMA ramp-up
    "new_sle": {"diffaugment": "translation", "precision": "bf16", "sle": True},
    "new_ema_r2": {"diffaugment": "translation", "precision": "bf16", "ema_rampup": 0.02},
    # a StyleGAN2-style skip G, screened before only with the old augmentation (1.54x)
    "new_skip": {"diffaugment": "translation", "precision": "bf16", "skip": True},
    # cutout back, without the colour jitter that hid its effect in aug_ctc
    "new_tc": {"diffaugment": "translation,cutout", "precision": "bf16"},
    # all three round 4-5 additions at once: do small, noisy gains add up?
    "new_all": {
        "diffaugment": "translation",
        "precision": "bf16",
        "mirror": True,
        "mbstd": True,
        "sle": True,
    },
    # round 6: learning rates on the new defaults (lr_x2 drew the clearest figures on the old ones)
    "new_lr3": {"diffaugment": "translation", "precision": "bf16", "lr": 0.0003},
    "new_glr": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0004},
    "new_glr6": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006},
    "new_glr8": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0008},
    # round 7: does the trend go on past 4x?
    "new_glr10": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.001},
    # StyleGAN3's blur-in: D sees both real and fake images blurred, sigma fading to 0, so G
    # settles the layout (a figure in every cell) before D judges the pixels
    "new_blur": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "blur": (2.0, 20)},
    # G's last layer only upsamples 32x32 features and mixes them to RGB, so 1-px detail at 64 px
    # (eyes, moustache) has no features of its own: a 16-wide 3x3 conv block at full size first
    "new_gtop": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "g_top": 16},
    # ADA (Karras et al. 2020) on top of translation: colour jitter and cutout, which hurt when always
    # on, applied to each image with a probability p that rises while D is sure of the real images
    # (mean sign of its logits above 0.6) and falls otherwise, by up to 1 per 20 kimg
    "new_ada": {
        "diffaugment": "translation",
        "precision": "bf16",
        "lr_g": 0.0006,
        "ada": ("color,cutout", 0.6, 20),
    },
    # one-sided label smoothing (Salimans et al. 2016): D's target for real images is 0.9, not 1, so
    # it stops growing surer of them (its mean sigmoid on reals climbs from 0.71 to 0.87 by the end)
    "new_ls": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "smooth": 0.9},
    # FastGAN's self-supervised D: a small decoder rebuilds each real image D saw (at half size)
    # from D's 8x8 features, so D must keep what the image shows, not only what tells it apart
    "new_recon": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "recon": 1.0},
    # balanced consistency regularisation (Zhao et al. 2021): D's output on each image, real and
    # fake, is pulled towards its output on the un-augmented image; lambda 10 as in the paper
    "new_bcr": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "bcr": 10.0},
    # a smaller latent for 294 images
    "new_z32": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "latent_dim": 32},
    # D without BatchNorm (judging each image on its own, not against its batch), kept in check by
    # R1 instead, as StyleGAN's and R3GAN's D are; gamma near StyleGAN2-ADA's heuristic for 64 px
    "new_nobn": {
        "diffaugment": "translation",
        "precision": "bf16",
        "lr_g": 0.0006,
        "d_bn": False,
        "r1_gamma": 0.05,
    },
    # a noisier G may want a longer EMA: the same training runs as new_glr6, averaged over 2x as long
    "new_glr6_ema": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "ema_rampup": 0.1},
    "new_dlow": {"diffaugment": "translation", "precision": "bf16", "lr_d": 0.0001},  # G 2x D, lower
    # relativistic losses, at the cost of the standard one
    "new_ragan": {"diffaugment": "translation", "precision": "bf16", "rel": "avg"},
    "new_rpgan": {"diffaugment": "translation", "precision": "bf16", "rel": "pair"},
    # round 8: what the issue lists and rounds 1-7 left out. SAGAN's self-attention (Zhang et al. 2019)
    # after G's and D's blocks at 16x16 (or 32x32): every position sees the whole figure, so cap, face
    # and overalls can agree with each other, which 3x3 convs only do over several layers
    "new_attn16": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "attn": 16},
    "new_attn32": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "attn": 32},
    "new_attn8": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "attn": 8},
    # Progressive GAN's pixelwise feature normalisation in G instead of BatchNorm: each image's
    # features scaled on their own, so G's samples stop depending on the rest of the batch
    "new_pixnorm": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "g_norm": "pixel"},
    # top-k training (Sinha et al. 2020): G learns only from its fakes that D scores highest, k
    # shrinking from the whole batch by 0.99 per epoch to half of it, so the worst samples stop
    # pulling G towards D's current blind spots; costs nothing
    "new_topk": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "topk": (0.99, 0.5)},
    # the defaults again, run beside round 8 (same day, same load): the machine ran slower per CPU
    # second that day than in round 6, so round 8's rows are also compared with this
    "ctl_glr6": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006},
    # Adam with beta1 = 0, beta2 = 0.99, as StyleGAN, BigGAN and R3GAN train: worse on the old
    # defaults (betas_0_99), not tried on the faster G
    "new_b0": {
        "diffaugment": "translation",
        "precision": "bf16",
        "lr_g": 0.0006,
        "beta1": 0.0,
        "beta2": 0.99,
    },
    # round 9: G's upsampling as the classic DCGAN's 4x4 stride-2 transposed convs (`upsample:
    # deconv`, a param): 4/9 of the multiply-adds of nearest + 3x3, so about 1.3x the images in
    # the budget; it drew checkerboard blobs under the old defaults (README, Training)
    "new_deconv": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "upsample": "deconv"},
    # the defaults again, beside round 9, seed for seed (the machine's speed changes day to day)
    "ctl_r9": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006},
    # LeCam on the faster G, at a third of round 1's weight (0.3 there, on the old defaults: worse)
    "new_lecam": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "lecam": 0.1},
    # narrower nets see more images in the budget; level with the old defaults in round 1 (ch24),
    # not tried since more images started to pay (bf16, the faster G)
    "new_ch24": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "channels": 24},
    "new_ch16": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "channels": 16},
    # round 10, what the issue lists and rounds 1-9 left out. DiffAugment's translation strength:
    # the paper's 1/8 of the size (+-8 px at 64) is the default; half and twice that
    "new_shift16": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "shift": 1 / 16},
    "new_shift25": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "shift": 1 / 4},
    # StyleGAN's per-pixel noise inputs in G (a learned per-channel strength, from 0), so that G
    # need not spend its features on pixel-level variation
    "new_noise": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "noise": True},
    # residual blocks in G: after each block's ReLU (4-32 px), x + ReLU(BN(conv3x3(x))); about 60%
    # more of G's multiply-adds
    "new_res": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "res": True},
    # the defaults again, beside round 10 (seed for seed: control runs of the same config on other
    # days differ by up to 0.12 per seed)
    "ctl_r10": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006},
    # hinge instead of the non-saturating loss, on the faster G (round 1, old defaults: worse)
    "new_hinge": {"diffaugment": "translation", "precision": "bf16", "lr_g": 0.0006, "loss": "hinge"},
}
STUDY_ONLY = (
    *("lr_g", "lr_d", "lecam", "ema_rampup", "lr_decay", "mirror", "mbstd", "sle", "skip", "rel"),
    *("blur", "d_bn", "g_top", "ada", "smooth", "recon", "bcr"),  # round 7
    *("attn", "g_norm", "topk"),  # round 8
    *("noise", "res"),  # round 10
)
# --tiny: one of each code path
TINY_CONFIGS = ["defaults", "ttur", "d_half", "lecam", "lr_decay", "new_mirror", "new_mbstd", "new_sle"]
TINY_CONFIGS += ["new_blur", "new_attn16", "new_pixnorm", "new_shift25", "new_noise", "new_res"]
EVAL_N, EVAL_SEED, GRID_SEED = 512, 123, 42  # as the evaluate and sample stages
FULL = "full"  # --round full (table and --plot only): all runs at the whole budget, across rounds
CURVE_IMAGES = 128  # as the trainer's in-training SWD (DVCLive eval/swd_avg)


class LeCamTrainer(Trainer):
    """D's loss plus LeCam regularisation (Tseng et al. 2021): D's outputs on real images are pulled
    towards the moving average of its outputs on fakes and vice versa, which bounds how far D can
    separate a few hundred images."""

    decay = 0.99
    lecam = 0.0
    ema_real = ema_fake = None

    def d_loss(self, out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        base = super().d_loss(out_real, out_fake)
        if self.ema_real is None:
            self.ema_real, self.ema_fake = out_real.detach().mean(), out_fake.detach().mean()
        self.ema_real = self.decay * self.ema_real + (1 - self.decay) * out_real.detach().mean()
        self.ema_fake = self.decay * self.ema_fake + (1 - self.decay) * out_fake.detach().mean()
        reg = (out_real - self.ema_fake).relu().square().mean() + (
            self.ema_real - out_fake
        ).relu().square().mean()
        return base + self.lecam * reg


class RelativisticTrainer(Trainer):
    """Relativistic losses (Jolicoeur-Martineau 2018): D judges whether a real image looks more
    real than a fake one, and G's loss pushes its images above the real ones. `avg` is RaSGAN (each
    output against the other batch's mean), which drew clearer DCGAN samples than the standard loss
    on a few thousand 64 px cats; `pair` is RpGAN (real i against fake i), R3GAN's choice (2024).

    G's loss needs D on real images: it reuses the D step's outputs, detached, from D before its
    update, so a step costs what a standard one does."""

    rel = "avg"
    _real: torch.Tensor | None = None

    def _margins(self, out_real: torch.Tensor, out_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rel == "pair":
            return out_real - out_fake, out_fake - out_real
        return out_real - out_fake.mean(), out_fake - out_real.mean()

    def d_loss(self, out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        self._real = out_real.detach()
        real_vs_fake, fake_vs_real = self._margins(out_real, out_fake)
        if self.rel == "pair":
            return F.softplus(-real_vs_fake).mean()
        return F.softplus(-real_vs_fake).mean() + F.softplus(fake_vs_real).mean()

    def g_loss(self, out_fake: torch.Tensor) -> torch.Tensor:
        real_vs_fake, fake_vs_real = self._margins(self._real, out_fake)
        if self.rel == "pair":
            return F.softplus(-fake_vs_real).mean()
        return F.softplus(-fake_vs_real).mean() + F.softplus(real_vs_fake).mean()


def study_base(params_path: str | Path) -> TrainParams:
    """params.yaml's train section with STUDY_BASE on top: what every config overrides."""
    return dataclasses.replace(load_params(params_path).train, **STUDY_BASE)


class MinibatchStd(torch.nn.Module):
    """Progressive GAN's minibatch standard deviation: one extra feature map, the mean over features
    and positions of the std over groups of 4 images, so D can see a batch that lacks variety."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = math.gcd(4, b)
        y = x.float().view(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b / g,)
        y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


def add_mbstd(t: Trainer) -> None:
    """Insert MinibatchStd before D's last conv (which gains an input channel); new D optimizer."""
    from pipeline.model import init_weights

    layers = list(t.d.main)
    last = layers[-1]
    conv = torch.nn.Conv2d(last.in_channels + 1, 1, 4, 1, 0, bias=False)
    init_weights(conv)
    t.d.main = torch.nn.Sequential(*layers[:-1], MinibatchStd(), conv).to(memory_format=t.fmt)
    renew_d(t)


def excitation(cin: int, cout: int) -> torch.nn.Module:
    """FastGAN's skip-layer excitation: coarse features -> one gate in (0, 1) per fine channel."""
    return torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Conv2d(cin, cout, 4, 1, 0, bias=False),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Conv2d(cout, cout, 1, 1, 0, bias=False),
        torch.nn.Sigmoid(),
    )


class SLEGenerator(torch.nn.Module):
    """The DCGAN generator with FastGAN's skip-layer excitation (Liu et al. 2021): each block's
    features gate the channels of the block two steps (4x the size) finer, so at 64 px the 4x4
    block gates the 16x16 one and 8x8 the 32x32: global shape reaches the fine layers in one step."""

    def __init__(self, g: torch.nn.Module) -> None:
        super().__init__()
        self.latent_dim = g.latent_dim
        self.main = g.main
        ends = [i for i, m in enumerate(self.main) if isinstance(m, torch.nn.ReLU)]  # one per block
        self.pairs = list(zip(ends, ends[2:], strict=False))
        width = lambda i: self.main[i - 1].num_features  # noqa: E731 (the BatchNorm before the ReLU)
        self.excite = torch.nn.ModuleList(excitation(width(a), width(b)) for a, b in self.pairs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.view(z.shape[0], -1, 1, 1)
        sources = {a for a, _ in self.pairs}
        gates = {b: (a, e) for (a, b), e in zip(self.pairs, self.excite, strict=True)}
        saved: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.main):
            x = layer(x)
            if i in gates:
                a, excite = gates[i]
                x = x * excite(saved[a])
            if i in sources:
                saved[i] = x
        return x


class SkipGenerator(torch.nn.Module):
    """The DCGAN generator as a StyleGAN2 "skip" G: every block also has a 1x1 RGB output, and
    the picture is the sum of all of them, each upsampled (bilinear) to full size, before tanh."""

    def __init__(self, g: torch.nn.Module) -> None:
        super().__init__()
        self.latent_dim = g.latent_dim
        self.main = g.main
        self.ends = [i for i, m in enumerate(self.main) if isinstance(m, torch.nn.ReLU)]
        self.rgb = torch.nn.ModuleList(
            torch.nn.Conv2d(self.main[i - 1].num_features, 3, 1, bias=False) for i in self.ends
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.view(z.shape[0], -1, 1, 1)
        rgbs = []
        for i, layer in enumerate(self.main[:-1]):  # all but the tanh
            x = layer(x)
            if i in self.ends:
                rgbs.append(self.rgb[self.ends.index(i)](x))
        size = x.shape[-2:]
        for r in rgbs:
            x = x + torch.nn.functional.interpolate(r, size=size, mode="bilinear", align_corners=False)
        return torch.tanh(x)


def replace_g(t: Trainer, g: torch.nn.Module, added: torch.nn.Module) -> None:
    """G becomes `g` (built around the Trainer's G), its `added` modules initialised as G's are;
    new EMA copy and G optimizer."""
    import copy

    from pipeline.model import init_weights
    from pipeline.trainer import _make_adam

    added.apply(init_weights)
    t.g = g.to(memory_format=t.fmt)
    t.g_ema = copy.deepcopy(t.g).eval().requires_grad_(False)
    t.opt_g = _make_adam(t.g.parameters(), t.p, t.device, t.opt_g.param_groups[0]["lr"])
    t.g_fwd = t.g


def renew_d(t: Trainer) -> None:
    """After D changed shape or gained modules: a new D optimizer over all its parameters, at D's
    learning rate, and the Trainer's forward pointing at it."""
    from pipeline.trainer import _make_adam

    t.opt_d = _make_adam(t.d.parameters(), t.p, t.device, t.opt_d.param_groups[0]["lr"])
    t.d_fwd = t.d


def add_mirror(t: Trainer) -> None:
    """Each real image x-flipped with probability 1/2 (its own generator: other draws are unchanged)."""
    gen = torch.Generator().manual_seed(t.p.seed + 4242)
    take = t._next_real

    def mirrored() -> torch.Tensor:
        x = take()
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x).contiguous(memory_format=t.fmt)

    t._next_real = mirrored


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's Gaussian blur (reflect padding) with a kernel of 3 sigma each side, at most the
    image; a no-op below 1/3 px."""
    from torchvision.transforms.v2.functional import gaussian_blur as blur

    r = min(int(sigma * 3), x.shape[-1] - 1)
    return blur(x, kernel_size=2 * r + 1, sigma=sigma) if r >= 1 else x


def add_blur(t: Trainer, sigma: float, fade_kimg: float) -> None:
    """Everything D sees (real and fake, in the D and the G step) blurred after augmentation, by a
    sigma (px) that falls linearly to 0 over the first `fade_kimg` (StyleGAN3's blur_init_sigma)."""
    augment = t._augment

    def blurred(x: torch.Tensor) -> torch.Tensor:
        s = sigma * max(0.0, 1.0 - t.nimg / (fade_kimg * 1000))
        return gaussian_blur(augment(x), s).contiguous(memory_format=t.fmt)

    t._augment = blurred


def add_recon(t: Trainer, weight: float, widths: tuple[int, int] = (32, 16)) -> None:
    """FastGAN's reconstruction-regularised D (Liu et al. 2021), with an MSE instead of LPIPS: a
    decoder (two upsample + 3x3 conv blocks, a part of D, trained with it) turns D's 8x8 features
    of the real batch back into that batch as D saw it, downsampled to 4x the features' size; its
    mean squared error, times `weight`, joins D's loss. Fakes and the G step are unchanged."""
    from pipeline.model import init_weights

    at = next(i for i, m in enumerate(t.d.main) if isinstance(m, torch.nn.LeakyReLU) and _size(t, i) == 8)
    cin = t.d.main[at - 1].num_features
    a, b = widths
    up = lambda i, o: [torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(i, o, 3, 1, 1, bias=False)]  # noqa: E731
    decoder = torch.nn.Sequential(
        *up(cin, a), torch.nn.BatchNorm2d(a), torch.nn.LeakyReLU(0.2),
        *up(a, b), torch.nn.BatchNorm2d(b), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(b, 3, 3, 1, 1, bias=False), torch.nn.Tanh(),
    )  # fmt: skip
    decoder.apply(init_weights)
    t.d.decoder = decoder.to(memory_format=t.fmt)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    inputs: list[torch.Tensor] = []
    t.d.main[0].register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    t.d.main[at].register_forward_hook(lambda _m, _a, out: seen.append((inputs[-1], out)))
    d_loss = t.d_loss

    def with_recon(out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        image, features = seen[-2]  # this D step's real batch; the last call was its fakes
        seen.clear()
        inputs.clear()
        rebuilt = t.d.decoder(features).float()
        target = F.adaptive_avg_pool2d(image.float(), rebuilt.shape[-1])
        t.recon_mse = F.mse_loss(rebuilt, target).detach()
        return d_loss(out_real, out_fake) + weight * F.mse_loss(rebuilt, target)

    t.d_loss = with_recon
    renew_d(t)


def add_bcr(t: Trainer, weight: float) -> None:
    """bCR: D's loss gains weight x (mean squared difference between D on the augmented and the
    plain real batch, and the same for the fake batch). Costs two more D passes per D step."""
    plain: list[torch.Tensor] = []
    augment, d_loss = t._augment, t.d_loss

    def recorded(x: torch.Tensor) -> torch.Tensor:
        plain.append(x)
        return augment(x)

    def consistent(out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        real, fake = plain[-2:]  # this D step's two batches, as they were before augmentation
        plain.clear()
        reg = F.mse_loss(t.d_fwd(real).float(), out_real) + F.mse_loss(t.d_fwd(fake).float(), out_fake)
        return d_loss(out_real, out_fake) + weight * reg

    t._augment, t.d_loss = recorded, consistent


def _size(t: Trainer, layer: int) -> int:
    """The spatial size of D's output at `layer` for a full-size image."""
    x = torch.zeros(1, 3, t.p.resolution, t.p.resolution)
    with torch.no_grad():
        was = t.d.training
        t.d.eval()
        for m in t.d.main[: layer + 1]:
            x = m(x)
        t.d.train(was)
    return x.shape[-1]


def smoothed_d_loss(out_real: torch.Tensor, out_fake: torch.Tensor, target: float) -> torch.Tensor:
    """The BCE D loss with real images aimed at `target` instead of 1 (fakes still at 0)."""
    real = F.binary_cross_entropy_with_logits(out_real, torch.full_like(out_real, target))
    return real + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))


def add_ada(t: Trainer, policy: str, target: float, speed_kimg: float, interval: int = 4) -> None:
    """Adaptive augmentation: after DiffAugment's own policy, each op of `policy` is applied to each
    image with probability `t.ada["p"]`. Every `interval` D steps p moves by interval x batch /
    (speed_kimg x 1000) towards more augmentation if D's mean sign on real images (ADA's r_t) is
    above `target`, towards less if below; p stays in [0, 1]."""
    from pipeline.diffaugment import _OPS, parse_policy

    ops = [_OPS[name] for name in parse_policy(policy)]
    t.ada = {"p": 0.0, "signs": [], "p_max": 0.0}
    augment, d_loss = t._augment, t.d_loss

    def augmented(x: torch.Tensor) -> torch.Tensor:
        x = augment(x)
        if t.ada["p"] > 0:
            for op in ops:
                pick = torch.rand(x.shape[0], 1, 1, 1, generator=t.gen_dev, device=x.device) < t.ada["p"]
                x = torch.where(pick, op(x, t.gen_dev), x)
        return x.contiguous(memory_format=t.fmt)

    def observed(out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        signs = t.ada["signs"]
        signs.append(float(out_real.detach().sign().mean()))
        if len(signs) == interval:
            step = math.copysign(
                interval * t.images_per_step / (speed_kimg * 1000), sum(signs) / interval - target
            )
            t.ada["p"] = min(1.0, max(0.0, t.ada["p"] + step))
            t.ada["p_max"] = max(t.ada["p_max"], t.ada["p"])
            signs.clear()
        return d_loss(out_real, out_fake)

    t._augment, t.d_loss = augmented, observed


def full_size_block(g: torch.nn.Module, width: int) -> torch.nn.Module:
    """G's last conv (features -> RGB, right after the last 2x upsample) becomes a `width`-wide 3x3
    conv, BatchNorm, ReLU and a 3x3 conv to RGB, all at full size; returns the new layers."""
    layers = list(g.main)
    last = layers[-2]
    assert isinstance(last, torch.nn.Conv2d) and isinstance(layers[-1], torch.nn.Tanh), "nearest G only"
    top = torch.nn.Sequential(
        torch.nn.Conv2d(last.in_channels, width, 3, 1, 1, bias=False),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(True),
        torch.nn.Conv2d(width, 3, 3, 1, 1, bias=False),
    )
    g.main = torch.nn.Sequential(*layers[:-2], *top, layers[-1])
    return top


def drop_d_batchnorm(t: Trainer) -> None:
    """D's BatchNorm layers become identities (their affine weights leave D's optimizer)."""

    t.d.main = torch.nn.Sequential(
        *(torch.nn.Identity() if isinstance(m, torch.nn.BatchNorm2d) else m for m in t.d.main)
    )
    renew_d(t)


class SelfAttention(torch.nn.Module):
    """SAGAN's self-attention block: 1x1 convs make queries and keys (C/8 wide) and values (C/2, as
    SAGAN's released code, where the paper has C/8; without that code's 2x2 max-pool of keys and values),
    every position attends to all the others, a 1x1 conv maps back to C, and the result is added to
    the input times a learned `gamma` that starts at 0 (so the block starts as the identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k, v = max(channels // 8, 1), max(channels // 2, 1)
        self.q = torch.nn.Conv2d(channels, k, 1, bias=False)
        self.k = torch.nn.Conv2d(channels, k, 1, bias=False)
        self.v = torch.nn.Conv2d(channels, v, 1, bias=False)
        self.out = torch.nn.Conv2d(v, channels, 1, bias=False)
        self.gamma = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = lambda conv: conv(x).flatten(2).transpose(1, 2)  # noqa: E731 (b, h*w, width)
        # SAGAN's softmax(q k^T) has no 1/sqrt(d) scaling: scale=1 keeps its definition
        o = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v), scale=1.0)
        o = o.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.gamma * self.out(o)


def _insert_after(net: torch.nn.Module, act: type, size: int, resolution: int, make) -> torch.nn.Module:
    """`net.main` with `make(width)` inserted after the `act` layer whose output is `size` px wide;
    returns the inserted module."""
    x = torch.zeros(
        2, *((net.latent_dim, 1, 1) if hasattr(net, "latent_dim") else (3, resolution, resolution))
    )
    layers, was = list(net.main), net.training
    net.eval()  # a probe, not a training step: BatchNorm's running statistics stay as they are
    try:
        with torch.no_grad():
            for i, m in enumerate(layers):
                x = m(x)
                if isinstance(m, act) and x.shape[-1] == size:
                    block = make(x.shape[1])
                    net.main = torch.nn.Sequential(*layers[: i + 1], block, *layers[i + 1 :])
                    return block
    finally:
        net.train(was)
    raise ValueError(f"no {act.__name__} with {size}x{size} output")


def add_attention(t: Trainer, size: int) -> None:
    """A SelfAttention block after G's block and after D's block whose features are `size` px wide;
    new G (with its EMA copy) and D optimizers."""
    from pipeline.model import init_weights

    res = t.p.resolution
    g_block = _insert_after(t.g, torch.nn.ReLU, size, res, SelfAttention)
    d_block = _insert_after(t.d, torch.nn.LeakyReLU, size, res, SelfAttention)
    d_block.apply(init_weights)
    t.d = t.d.to(memory_format=t.fmt)
    renew_d(t)
    replace_g(t, t.g, g_block)


class PixelNorm(torch.nn.Module):
    """Progressive GAN's pixelwise feature vector normalisation: each position's feature vector
    divided by its root mean square over channels (eps 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def pixel_norm_g(t: Trainer) -> None:
    """G's BatchNorm layers become PixelNorm (which has no weights); new EMA copy and G optimizer."""
    t.g.main = torch.nn.Sequential(
        *(PixelNorm() if isinstance(m, torch.nn.BatchNorm2d) else m for m in t.g.main)
    )
    replace_g(t, t.g, torch.nn.Identity())


class NoiseInput(torch.nn.Module):
    """StyleGAN's noise input: one N(0, 1) map per image and position, added to every channel with
    a learned per-channel strength that starts at 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.strength = torch.nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x + self.strength.to(x.dtype) * torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)


def add_noise_inputs(t: Trainer) -> None:
    """A NoiseInput after each of G's convs that BatchNorm follows (all but the RGB one); new EMA
    copy and G optimizer."""
    layers: list[torch.nn.Module] = []
    for m in t.g.main:
        if isinstance(m, torch.nn.BatchNorm2d):
            layers.append(NoiseInput(m.num_features))
        layers.append(m)
    t.g.main = torch.nn.Sequential(*layers)
    replace_g(t, t.g, torch.nn.Identity())


class Residual(torch.nn.Module):
    """x + ReLU(BN(conv3x3(x))): a residual block of one conv, at the block's own width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            torch.nn.BatchNorm2d(channels),
            torch.nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def add_residual_g(t: Trainer) -> None:
    """A Residual block after each of G's ReLUs (4 px up to half the resolution); new EMA copy and
    G optimizer."""
    res, blocks = t.p.resolution, []
    size = 4
    while size < res:
        blocks.append(_insert_after(t.g, torch.nn.ReLU, size, res, Residual))
        size *= 2
    replace_g(t, t.g, torch.nn.ModuleList(blocks))


def topk_count(batch: int, epoch: float, gamma: float, nu: float) -> int:
    """Top-k training's k: gamma^epoch of the batch, but at least nu of it (and at least 1)."""
    return max(1, int(nu * batch), int(gamma**epoch * batch))


def add_topk(t: Trainer, gamma: float, nu: float) -> None:
    """G's loss over only the k fakes with the highest D logits (k from topk_count, epochs counted
    in images shown over the training set's size); D's step is unchanged."""
    g_loss = t.g_loss

    def best_k(out_fake: torch.Tensor) -> torch.Tensor:
        k = topk_count(out_fake.shape[0], t.nimg / t.n, gamma, nu)
        t.topk_k = k
        return g_loss(out_fake.topk(k).values)

    t.g_loss = best_k


def build(p: TrainParams, extra: dict[str, Any], data: torch.Tensor) -> Trainer:
    """A Trainer on the CPU, with the study-only overrides applied."""
    cls = LeCamTrainer if "lecam" in extra else RelativisticTrainer if "rel" in extra else Trainer
    t = cls(p, data, torch.device("cpu"))
    if "rel" in extra:
        t.rel = extra["rel"]
    if extra.get("mbstd"):
        add_mbstd(t)
    if extra.get("sle"):
        g = SLEGenerator(t.g)
        replace_g(t, g, g.excite)
    if extra.get("skip"):
        g = SkipGenerator(t.g)
        replace_g(t, g, g.rgb)
    if extra.get("mirror"):
        add_mirror(t)
    if "blur" in extra:
        add_blur(t, *extra["blur"])
    if extra.get("d_bn") is False:
        drop_d_batchnorm(t)
    if "ada" in extra:
        add_ada(t, *extra["ada"])
    if "recon" in extra:
        add_recon(t, extra["recon"])
    if "bcr" in extra:
        add_bcr(t, extra["bcr"])
    if "smooth" in extra:
        t.d_loss = lambda r, f, target=extra["smooth"]: smoothed_d_loss(r, f, target)
    if "g_top" in extra:
        top = full_size_block(t.g, extra["g_top"])
        replace_g(t, t.g, top)
    if "attn" in extra:
        add_attention(t, extra["attn"])
    if extra.get("g_norm") == "pixel":
        pixel_norm_g(t)
    if "topk" in extra:
        add_topk(t, *extra["topk"])
    if extra.get("noise"):
        add_noise_inputs(t)
    if extra.get("res"):
        add_residual_g(t)
    t.lecam = extra.get("lecam", 0.0)
    t.ema_rampup = extra.get("ema_rampup", t.ema_rampup)
    t.lr_decay = extra.get("lr_decay", 0.0)
    for key, opt in (("lr_g", t.opt_g), ("lr_d", t.opt_d)):
        if key in extra:
            for group in opt.param_groups:
                group["lr"] = extra[key]
    return t


def train(
    t: Trainer, budget_cpu_s: float | None, kimg: float | None, curve_kimg: float, curve_fn
) -> dict[str, Any]:
    """Step until the CPU budget (or `kimg`) is spent; returns CPU s, wall s, kimg and the curve."""
    cpu = wall = 0.0
    curve: list[tuple[float, float, float]] = []
    next_curve = curve_kimg * 1000
    while True:
        if kimg is not None and t.nimg >= kimg * 1000:
            break
        if budget_cpu_s is not None and cpu >= budget_cpu_s:
            break
        if getattr(t, "lr_decay", 0.0) > 0 and budget_cpu_s:
            # constant, then linear to 0 over the last `lr_decay` of the budget
            left = max(0.0, 1.0 - cpu / budget_cpu_s)
            scale = min(1.0, left / t.lr_decay)
            for opt in (t.opt_g, t.opt_d):
                for group in opt.param_groups:
                    group.setdefault("base_lr", group["lr"])
                    group["lr"] = group["base_lr"] * scale
        c0, w0 = time.process_time(), time.perf_counter()
        t.step()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        if curve_kimg > 0 and t.nimg >= next_curve:
            curve.append((cpu / 60, t.nimg / 1000, curve_fn(t)))
            next_curve += curve_kimg * 1000
    if not torch.isfinite(t.acc).all():
        raise RuntimeError("loss became nan or inf")
    return {"cpu_s": cpu, "wall_s": wall, "kimg": t.nimg / 1000, "curve": curve}


def final_eval(t: Trainer, real: torch.Tensor, floor: float, n: int, swd_kw: dict) -> dict[str, float]:
    z = latents(n, t.p.latent_dim, torch.Generator().manual_seed(EVAL_SEED))
    fake = to_uint8(t.sample(z))
    swd = multiscale_swd(fake, real, seed=EVAL_SEED, **swd_kw)["swd_avg"]
    _, dist = nearest_neighbours(fake[:64], real)
    return {"swd": swd, "swd_over_floor": swd / floor, "nn_rms_median": float(dist.median())}


def config_params(name: str, seed: int, base: TrainParams) -> tuple[TrainParams, dict[str, Any]]:
    """The TrainParams of one config and seed (1 CPU thread), and its study-only overrides."""
    spec = CONFIGS[name]
    extra = {k: v for k, v in spec.items() if k in STUDY_ONLY}
    fields = {k: v for k, v in spec.items() if k not in STUDY_ONLY}
    return dataclasses.replace(base, **fields, seed=seed, threads=1, device="cpu", eval_kimg=0), extra


def run_one(
    name: str, seed: int, base: TrainParams, data: torch.Tensor, args: argparse.Namespace, budget: dict
) -> dict[str, Any]:
    p, extra = config_params(name, seed, base)
    t = build(p, extra, data)
    curve_real = data[
        torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))[:CURVE_IMAGES]
    ]
    curve_z = torch.randn(
        curve_real.shape[0], p.latent_dim, generator=torch.Generator().manual_seed(seed + 1)
    )

    def curve_fn(tr: Trainer) -> float:
        return multiscale_swd(curve_real, to_uint8(tr.sample(curve_z)), **args.swd)["swd_avg"]

    defining = "budget_cpu_s" not in budget
    res = train(
        t,
        None if defining else budget["budget_cpu_s"] * args.fraction,
        base.kimg if defining else None,
        args.curve_kimg,
        curve_fn,
    )
    if defining:
        budget["budget_cpu_s"] = res["cpu_s"]
    grid_z = latents(64, p.latent_dim, torch.Generator().manual_seed(GRID_SEED))
    grid = to_image(t.sample(grid_z), nrow=8)
    grid.save(args.out / f"{args.round}_{name}_s{seed}.png")
    metrics = final_eval(t, data, budget["floor"], args.eval_n, args.swd)
    record = {"round": args.round, "config": name, "seed": seed, "fraction": args.fraction}
    record |= {"img_per_cpu_s": res["kimg"] * 1000 / max(res["cpu_s"], 1e-9)} | res | metrics
    if hasattr(t, "ada"):
        record |= {"ada_p": t.ada["p"], "ada_p_max": t.ada["p_max"]}
    if defining:
        record["defines_budget"] = True
    return record


def load_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows: list[dict[str, Any]] = []
    budget: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if "budget_cpu_s" in row and "config" not in row:
                budget = row
            else:
                rows.append(row)
    return rows, budget


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def _ms(values: list[float]) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    return f"{values[0]:.3f}"


def select(rows: list[dict[str, Any]], round_name: str) -> list[dict[str, Any]]:
    """The runs of one round; `full`: every run at the whole budget, whatever its round."""
    if round_name == FULL:
        return [r for r in rows if r["fraction"] == 1.0]
    return [r for r in rows if r["round"] == round_name]


def table(rows: list[dict[str, Any]], round_name: str, budget: dict[str, float]) -> str:
    """Markdown table of one round, best SWD/floor first, ending with the ratio vs the defaults."""
    rows = select(rows, round_name)
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    mean = {name: statistics.mean(r["swd_over_floor"] for r in rs) for name, rs in by.items()}
    frac = rows[0]["fraction"] if rows else 0
    lines = [
        f"round {round_name}: budget {frac:g} x {budget.get('budget_cpu_s', 0) / 60:.1f} CPU-min "
        f"(1 thread; the defaults' {budget.get('kimg', 0):g} kimg), floor SWD {budget.get('floor', 0):.2f}",
        "",
        "| config | overrides | seeds | img/s (CPU) | kimg | SWD | SWD/floor | vs defaults | NN RMS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(by, key=lambda n: mean[n]):
        rs = by[name]
        over = json.dumps(CONFIGS.get(name, {})).replace('"', "").replace("|", "/") or "-"
        rel = f"{mean[name] / mean['defaults']:.3f}" if "defaults" in mean else "-"
        lines.append(
            f"| {name} | {over} | {len(rs)} | {statistics.mean(r['img_per_cpu_s'] for r in rs):.0f} "
            f"| {statistics.mean(r['kimg'] for r in rs):.1f} | {_ms([r['swd'] for r in rs])} "
            f"| {_ms([r['swd_over_floor'] for r in rs])} | {rel} "
            f"| {statistics.mean(r['nn_rms_median'] for r in rs):.1f} |"
        )
    # The closing ratio names the best config among those with as many seeds as the most-tried one
    # (3 in the study): one lucky seed should not be the headline.
    most = max((len(by[n]) for n in mean if n != "defaults"), default=0)
    if "defaults" in mean and most:
        best = min((n for n in mean if n != "defaults" and len(by[n]) == most), key=lambda n: mean[n])
        lines += [
            "",
            f"ratio: {mean[best] / mean['defaults']:.3f} (SWD/floor, {best} / defaults; best of the "
            f"configs with {most} seeds)",
        ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], names: list[str], round_name: str, path: Path) -> None:
    """SWD (the trainer's eval/swd_avg) against CPU minutes: one thin line per seed, a thick mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for colour, name in zip(("tab:grey", "tab:blue", "tab:orange", "tab:green"), names, strict=False):
        curves = [r["curve"] for r in select(rows, round_name) if r["config"] == name and r["curve"]]
        for c in curves:
            ax.plot([p[0] for p in c], [p[2] for p in c], color=colour, alpha=0.35, lw=1)
        n = min(len(c) for c in curves) if curves else 0
        if n:
            xs = [statistics.mean(c[i][0] for c in curves) for i in range(n)]
            ys = [statistics.mean(c[i][2] for c in curves) for i in range(n)]
            ax.plot(
                xs, ys, color=colour, lw=2.5, label=f"{name} ({len(curves)} seed{'s' * (len(curves) > 1)})"
            )
    ax.set_xlabel("training CPU minutes (1 thread)")
    ax.set_ylabel("eval/swd_avg (128 EMA samples vs 128 real)")
    ax.set_title("SWD during training, built-in set, 64 px")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path.write_bytes(buf.getvalue())


def side_by_side(rows_of_grids: list[list[Path]], path: Path) -> None:
    """One row of grids per config, each grid labelled `config, seed N` above it."""
    from PIL import Image, ImageDraw

    rows = [[(Image.open(q).convert("RGB"), _label(q)) for q in row] for row in rows_of_grids if row]
    pad, head = 12, 24
    w = max(sum(g.width for g, _ in row) + pad * (len(row) + 1) for row in rows)
    heights = [max(g.height for g, _ in row) + head for row in rows]
    sheet = Image.new("RGB", (w, sum(heights) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for row, h in zip(rows, heights, strict=True):
        x = pad
        for grid, label in row:
            draw.text((x, y + 6), label, fill="black")
            sheet.paste(grid, (x, y + head))
            x += grid.width + pad
        y += h
    # GAN samples are noisy, so a lossless RGB sheet of 9 grids is 3 MiB; an exact 256-colour
    # palette (median cut, no dithering) keeps it near 1 MiB at a mean error of about 3/255.
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def _config_of(grid: Path) -> str:
    """`final_g24_d16_s0.png` -> `g24_d16` (the round name has no underscore)."""
    return grid.stem.split("_", 1)[1].rsplit("_s", 1)[0]


def _label(grid: Path) -> str:
    """`final_defaults_s0.png` -> `defaults, seed 0`."""
    return f"{_config_of(grid)}, seed {grid.stem.rsplit('_s', 1)[1]}"


def truncation_sweep(
    g: torch.nn.Module,
    latent_dim: int,
    data: torch.Tensor,
    out: Path,
    values: list[float | None],
    n: int = EVAL_N,
    swd_kw: dict[str, int] | None = None,
) -> str:
    """SWD/floor of one trained generator with latents truncated as `generate --truncation` does
    (components beyond ±T redrawn; None = untruncated), as the evaluate stage measures it, and a
    grid per value (seed 42's latents, as samples/grid.png), beside `real.png`: 64 training
    images at the same size and layout, to judge the grids against. Markdown table."""
    from pipeline.sample import forward

    real, swd_kw = data, swd_kw or {}
    pick = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(GRID_SEED))[:64]
    to_image(to_unit(real[pick]), nrow=8).save(out / "real.png")
    a, b = split_halves(real, EVAL_SEED)
    floor = multiscale_swd(a, b, seed=EVAL_SEED, **swd_kw)["swd_avg"]
    lines = [
        f"truncation sweep: floor SWD {floor:.2f}",
        "",
        "| truncation | SWD | SWD/floor | SWD 64 / 32 / 16 px | NN RMS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in values:
        z = latents(n, latent_dim, torch.Generator().manual_seed(EVAL_SEED), t)
        fake = to_uint8(forward(g, z))
        swd = multiscale_swd(fake, real, seed=EVAL_SEED, **swd_kw)
        _, dist = nearest_neighbours(fake[:64], real)
        levels = " / ".join(f"{v:.1f}" for k, v in swd.items() if k != "swd_avg")
        lines.append(
            f"| {t or 'none'} | {swd['swd_avg']:.2f} | {swd['swd_avg'] / floor:.3f} | {levels} "
            f"| {float(dist.median()):.1f} |"
        )
        grid_z = latents(64, latent_dim, torch.Generator().manual_seed(GRID_SEED), t)
        to_image(forward(g, grid_z), nrow=8).save(out / f"truncation_{t or 'none'}.png")
    return "\n".join(lines)


def d_resample(logits: torch.Tensor, k: int, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """k distinct indices, in increasing order, drawn without replacement with probability
    proportional to exp(logit / temperature) (Gumbel top-k); temperature 0 keeps the k highest.

    For a D near its optimum exp(logit) is p_data / p_G, so at temperature 1 this is the
    discriminator-driven importance resampling of Azadi et al. 2019 and Grover et al. 2019."""
    if not 0 < k <= logits.numel():
        raise ValueError(f"k must be in 1..{logits.numel()}, got {k}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        keys = logits.double()
    else:
        u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_min(1e-300)
        keys = logits.double() / temperature - torch.log(-torch.log(u))
    return keys.topk(k).indices.sort().values


def drs_sweep(
    checkpoint: Path,
    data: torch.Tensor,
    out: Path,
    temperatures: list[float | None],
    n: int = EVAL_N,
    pool: int = 8,
    swd_kw: dict[str, int] | None = None,
) -> str:
    """SWD/floor when D picks the samples: `pool` x n EMA samples of a trained run (a
    models/checkpoint.pt, which holds D), n of them kept by `d_resample` at each temperature
    (None = the first n, as the evaluate stage), and a grid of the first 64 kept. Markdown table."""
    from pipeline.checkpoint import ADDED_LATER, restore

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    names = {f.name for f in dataclasses.fields(TrainParams)}
    saved = ADDED_LATER | state["params"]  # a checkpoint from before a param existed computed its old value
    p = TrainParams(**{k: v for k, v in saved.items() if k in names})
    p = dataclasses.replace(p, device="cpu", threads=1)
    t = Trainer(p, data, torch.device("cpu"))
    restore(t, state)
    swd_kw = swd_kw or {}
    z = latents(pool * n, p.latent_dim, torch.Generator().manual_seed(EVAL_SEED))
    fake = t.sample(z)
    t.d.eval()  # running statistics: each image scored on its own
    with torch.no_grad(), t.autocast():
        logits = torch.cat([t.d(c.contiguous(memory_format=t.fmt)).float() for c in fake.split(256)])
        real_logits = torch.cat(
            [t.d(to_unit(c).contiguous(memory_format=t.fmt)).float() for c in data.split(256)]
        )
    a, b = split_halves(data, EVAL_SEED)
    floor = multiscale_swd(a, b, seed=EVAL_SEED, **swd_kw)["swd_avg"]
    lines = [
        f"D-driven resampling of {checkpoint} ({t.nimg / 1000:.0f} kimg): {pool * n} samples, {n} kept; "
        f"D's logit on them {logits.mean():.2f} ± {logits.std():.2f}, on the training set "
        f"{real_logits.mean():.2f} ± {real_logits.std():.2f}; floor SWD {floor:.2f}",
        "",
        "| temperature | SWD | SWD/floor | SWD 64 / 32 / 16 px | mean logit kept |",
        "| --- | --- | --- | --- | --- |",
    ]
    u8 = to_uint8(fake)
    for temp in temperatures:
        if temp is None:
            keep = torch.arange(n)
        else:
            keep = d_resample(logits, n, temp, torch.Generator().manual_seed(EVAL_SEED))
        swd = multiscale_swd(u8[keep], data, seed=EVAL_SEED, **swd_kw)
        levels = " / ".join(f"{v:.1f}" for k, v in swd.items() if k != "swd_avg")
        label = "none" if temp is None else "top" if temp == 0 else f"{temp:g}"
        lines.append(
            f"| {label} | {swd['swd_avg']:.2f} | {swd['swd_avg'] / floor:.3f} | {levels} "
            f"| {float(logits[keep].mean()):.2f} |"
        )
        to_image(fake[keep[:64]], nrow=8).save(out / f"drs_{label}.png")
    return "\n".join(lines)


def tiny_data(n: int = 24, size: int = 32) -> torch.Tensor:
    """The first `n` built-in synthetic pictures at `size` px: what --tiny trains on."""
    from PIL import Image

    from pipeline import synthetic

    arrays = []
    for i in range(n):
        item = synthetic.render(0, i)
        with Image.open(io.BytesIO(item.data)) as img:
            img = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            arrays.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8))
    return torch.stack(arrays).view(n, size, size, 3).permute(0, 3, 1, 2).contiguous()


def _report(row: dict[str, Any]) -> None:
    print(
        f"    {row['kimg']:.1f} kimg in {row['cpu_s'] / 60:.2f} CPU-min ({row['wall_s'] / 60:.2f} wall), "
        f"SWD {row['swd']:.2f} = {row['swd_over_floor']:.3f} x floor",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--round",
        default="screen",
        help=f"name of this round in the results (default: screen); {FULL}: table only",
    )
    ap.add_argument(
        "--configs",
        default="",
        help="comma list of config names, or all; without it, print --round's table and train nothing",
    )
    ap.add_argument("--seeds", default="0", help="comma list of seeds")
    ap.add_argument(
        "--fraction", type=float, default=1.0, help="budget as a fraction of the defaults' CPU time"
    )
    ap.add_argument("--curve-kimg", type=float, default=5.0, help="in-training SWD interval; 0 = off")
    ap.add_argument("--eval-n", type=int, default=EVAL_N, help="generated images for the final SWD")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/quality_study"), help="output folder")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, default=paths.PROCESSED, help="processed images (index.csv)")
    ap.add_argument(
        "--plot", default="", help="comma list of configs: only write the SWD-vs-minutes plot and their grids"
    )
    ap.add_argument("--tiny", action="store_true", help="32 px, 24 images, a few steps: a smoke test")
    ap.add_argument(
        "--truncation",
        type=Path,
        metavar="MODEL",
        help="no training: SWD/floor and grids of MODEL (e.g. models/generator.pt) at latent truncations",
    )
    ap.add_argument(
        "--drs",
        type=Path,
        metavar="CHECKPOINT",
        help="no training: SWD/floor and grids when a run's D picks its samples (e.g. models/checkpoint.pt)",
    )
    args = ap.parse_args(argv)
    if args.drs:
        if not args.drs.is_file():
            ap.error(f"--drs {args.drs}: not a file; give a training checkpoint (models/checkpoint.pt)")
        try:
            state = torch.load(args.drs, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # torch raises several types for a file that is not its own
            ap.error(
                f"--drs {args.drs}: not a readable torch file ({type(e).__name__}); give models/checkpoint.pt"
            )
        if not (isinstance(state, dict) and {"params", "D", "G_ema"} <= state.keys()):
            ap.error(
                f"--drs {args.drs}: not a training checkpoint (it holds no D; models/generator.pt has only G); "
                "give models/checkpoint.pt"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        data = load_dataset(args.data, state["params"]["resolution"])
        print(drs_sweep(args.drs, data, args.out, [None, 2.0, 1.0, 0.0]))
        return 0
    if args.truncation:
        from pipeline.errors import PipelineError
        from pipeline.sample import load

        try:
            g, config = load(args.truncation)
            data = load_dataset(args.data, config["resolution"])
        except PipelineError as e:
            ap.error(str(e))
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"{args.truncation}:", flush=True)
        print(truncation_sweep(g, config["latent_dim"], data, args.out, [None, 2.0, 1.5, 1.0, 0.5]))
        return 0
    if "_" in args.round:
        ap.error(f"--round {args.round!r}: no underscores (grid files are <round>_<config>_s<seed>.png)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows, budget = load_results(results)
    if (args.round == FULL or not (args.configs or args.tiny)) and not args.plot:
        # A view of runs already made; nothing is trained. Training every config takes hours, so it
        # needs an explicit `--configs all`.
        print(table(rows, args.round, budget))
        return 0
    if args.plot:
        names = args.plot.split(",")
        plot(rows, names, args.round, args.out / "swd_vs_minutes.png")
        rows_of_grids = [
            sorted(
                q
                for q in args.out.glob(f"*_{n}_s*.png")
                if _config_of(q) == n and (args.round == FULL or q.name.startswith(f"{args.round}_"))
            )
            for n in names
        ]
        side_by_side(rows_of_grids, args.out / "grids_side_by_side.png")
        print(f"wrote {args.out / 'swd_vs_minutes.png'} and {args.out / 'grids_side_by_side.png'}")
        return 0

    names = TINY_CONFIGS if args.tiny else list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown config {unknown[0]!r}; known: {', '.join(CONFIGS)}")
    base = study_base(args.params)
    args.swd = {}  # SWD as the evaluate stage computes it
    if args.tiny:
        base = dataclasses.replace(base, resolution=32, channels=8, batch_size=8, kimg=0.032)
        data = tiny_data()
        # a curve point after every step: the tiny budget is a few steps, and a slow config (attention)
        # may get only one, so every config must still record its curve
        args.eval_n, args.curve_kimg = 16, base.batch_size / 1000
        args.swd = {"patches_per_image": 16, "projections": 64}
    else:
        data = load_dataset(args.data, base.resolution)
    if not budget:
        a, b = split_halves(data, EVAL_SEED)
        floor = multiscale_swd(a, b, seed=EVAL_SEED, **args.swd)["swd_avg"]
        budget = {"floor": floor, "kimg": base.kimg, "images": data.shape[0]}
    seeds = [int(s) for s in args.seeds.split(",")]
    if "budget_cpu_s" not in budget:  # the unit, measured once: the defaults, seed 0, to STUDY_BASE's kimg
        print(f"measuring the budget: defaults, seed 0, {base.kimg:g} kimg ...", flush=True)
        unit = argparse.Namespace(**{**vars(args), "round": "final", "fraction": 1.0})
        row = run_one("defaults", 0, base, data, unit, budget)
        append(results, budget)
        append(results, row)
        rows.append(row)
        _report(row)
    done = {(r["round"], r["config"], r["seed"]) for r in rows}
    todo = [(n, s) for n in names for s in seeds if (args.round, n, s) not in done]
    for i, (name, seed) in enumerate(todo):
        print(f"[{i + 1}/{len(todo)}] {args.round} {name} seed {seed} ...", flush=True)
        row = run_one(name, seed, base, data, args, budget)
        append(results, row)
        rows.append(row)
        _report(row)
    print(table(rows, args.round, budget))
    return 0 if math.isfinite(budget.get("floor", math.nan)) else 1


if __name__ == "__main__":
    sys.exit(main())
