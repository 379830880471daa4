"""DCGAN generator and discriminator (Radford et al. 2015) for any power-of-two size.

As in pytorch/examples dcgan: strided (transposed) 4x4 convolutions, BatchNorm,
ReLU in G and LeakyReLU(0.2) in D, N(0, 0.02) init. Widths double towards the
4x4 end, from `channels` at full resolution, capped at `max_channels`.
This file imports only torch, so it runs on any machine with torch >= 2.4.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


def widths(resolution: int, channels: int, max_channels: int = 512) -> list[int]:
    """Feature widths from the 4x4 block up to resolution/2."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    n = int(math.log2(resolution)) - 2  # number of 2x steps from 4x4
    return [min(channels * 2 ** (n - 1 - i), max_channels) for i in range(n)]


class Generator(nn.Module):
    def __init__(
        self, resolution: int = 64, latent_dim: int = 100, channels: int = 64, max_channels: int = 512
    ):
        super().__init__()
        w = widths(resolution, channels, max_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, w[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(True),
        ]
        for cin, cout in itertools.pairwise(w):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(w[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, resolution: int = 64, channels: int = 64, max_channels: int = 512):
        super().__init__()
        w = list(reversed(widths(resolution, channels, max_channels)))
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for cin, cout in itertools.pairwise(w):
            layers += [
                nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(w[-1], 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)  # logits; the loss applies the sigmoid


def init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_generator(config: dict) -> Generator:
    """Rebuild a generator from the config saved beside its weights."""
    return Generator(
        config["resolution"], config["latent_dim"], config["channels"], config.get("max_channels", 512)
    )


def load_generator(path: str, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """Load models/generator.pt (weights + config) ready for sampling."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    g = build_generator(ckpt["config"]).to(device)
    g.load_state_dict(ckpt["state_dict"])
    g.eval()
    return g, ckpt["config"]
