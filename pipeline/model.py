"""DCGAN generator and discriminator (Radford et al. 2015) for any power-of-two size, 32 to 512.

As in pytorch/examples dcgan: strided 4x4 convolutions, BatchNorm, ReLU in G
and LeakyReLU(0.2) in D, N(0, 0.02) init. Widths double towards the 4x4 end,
from `channels` at full resolution, capped at `max_channels`.

Two options for small data at high resolution:
- `upsample="nearest"` replaces each stride-2 transposed conv in G by a
  nearest-neighbour 2x upsample and a 3x3 conv, which has no checkerboard
  artifacts (Odena et al. 2016).
- `spectral_norm=True` puts spectral norm on every conv of D and drops D's
  BatchNorm, as in SN-GAN (the two fight over the scale of activations).

This file imports only torch, so it runs on any machine with torch >= 2.4.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
from torch import nn


def widths(resolution: int, channels: int, max_channels: int = 512) -> list[int]:
    """Feature widths from the 4x4 block up to resolution/2."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    n = int(math.log2(resolution)) - 2  # number of 2x steps from 4x4
    return [min(channels * 2 ** (n - 1 - i), max_channels) for i in range(n)]


def _up(cin: int, cout: int, upsample: str) -> list[nn.Module]:
    if upsample == "deconv":
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)]
    if upsample == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
    raise ValueError(f"upsample must be deconv or nearest, got {upsample!r}")


class Generator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,
        latent_dim: int = 100,
        channels: int = 64,
        max_channels: int = 512,
        upsample: str = "deconv",
    ):
        super().__init__()
        w = widths(resolution, channels, max_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, w[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(True),
        ]
        for cin, cout in itertools.pairwise(w):
            layers += [*_up(cin, cout, upsample), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [*_up(w[-1], 3, upsample), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    def __init__(
        self, resolution: int = 64, channels: int = 64, max_channels: int = 512, spectral_norm: bool = False
    ):
        super().__init__()
        w = list(reversed(widths(resolution, channels, max_channels)))
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(3, w[0], 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
        for cin, cout in itertools.pairwise(w):
            layers.append(sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=False)))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(sn(nn.Conv2d(w[-1], 1, 4, 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)  # logits; the loss applies the sigmoid


def init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        # With spectral norm, `weight` is computed; the stored tensor is `parametrizations.weight.original`.
        weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.normal_(weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def generator_config(
    resolution: int, latent_dim: int, channels: int, max_channels: int = 512, upsample: str = "deconv"
) -> dict:
    """Everything build_generator needs, saved beside the weights in models/generator.pt."""
    return {
        "resolution": resolution,
        "latent_dim": latent_dim,
        "channels": channels,
        "max_channels": max_channels,
        "upsample": upsample,
    }


def build_generator(config: dict) -> Generator:
    """Rebuild a generator from the config saved beside its weights."""
    return Generator(
        config["resolution"],
        config["latent_dim"],
        config["channels"],
        config.get("max_channels", 512),
        config.get("upsample", "deconv"),
    )


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", which: str = "ema"
) -> tuple[Generator, dict]:
    """Load models/generator.pt ready for sampling, in eval mode.

    `which="ema"` (default) gives the EMA weights, the ones to sample from;
    `which="raw"` gives the weights the optimizer trained. Files written before
    EMA existed have only `state_dict`, which serves both.
    """
    if which not in ("ema", "raw"):
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    g = build_generator(ckpt["config"]).to(device)
    key = "raw_state_dict" if which == "raw" and "raw_state_dict" in ckpt else "state_dict"
    g.load_state_dict(ckpt[key])
    g.eval()
    return g, ckpt["config"]
